"""Used tf.data iterators are destroyed on a background thread, not in the training loop."""

import subprocess
import sys
import threading
import weakref

import pytest
import tensorflow as tf

from effnet_tf.data import iterator_release
from effnet_tf.data.iterator_release import release_in_background


class SlowToDestroy:
    """Stands for a tf.data iterator whose destructor blocks: it records the destroying thread
    and blocks until the main thread has moved on (a destructor on the main thread would wait
    here for the whole bound and be seen as such)."""

    def __init__(self, moved_on: threading.Event, destroyed_in: list):
        self.moved_on, self.destroyed_in = moved_on, destroyed_in

    def __del__(self):
        self.destroyed_in.append(threading.current_thread())
        self.moved_on.wait(10)


def test_destructor_runs_on_the_release_thread_after_other_owners_let_go():
    moved_on, destroyed_in = threading.Event(), []
    obj = SlowToDestroy(moved_on, destroyed_in)
    other_owner = obj  # e.g. Keras' epoch iterator, until fit returns
    probe = weakref.ref(obj)
    thread = release_in_background(obj)
    del obj
    thread.join(0.3)
    assert thread.is_alive() and probe() is not None  # still owned elsewhere: not released yet
    del other_owner  # the last other owner lets go; the main thread does not destroy it
    moved_on.set()
    thread.join(10)
    assert not thread.is_alive() and probe() is None
    assert destroyed_in == [thread] and thread is not threading.main_thread()


def test_a_tf_data_iterator_is_destroyed_on_the_release_thread():
    iterator = iter(tf.data.Dataset.range(1000).map(lambda x: x * 2, num_parallel_calls=tf.data.AUTOTUNE)
                    .prefetch(tf.data.AUTOTUNE))
    assert [int(next(iterator)) for _ in range(3)] == [0, 2, 4]
    probe = weakref.ref(iterator)
    thread = release_in_background(iterator)
    del iterator
    thread.join(120)
    assert not thread.is_alive() and probe() is None


def test_finish_releases_reports_destructions_still_running():
    moved_on, destroyed_in = threading.Event(), []
    thread = release_in_background(SlowToDestroy(moved_on, destroyed_in))
    assert iterator_release.finish_releases(timeout=0.3) == 1  # still inside the destructor
    moved_on.set()
    assert iterator_release.finish_releases(timeout=10) == 0
    assert not thread.is_alive() and destroyed_in == [thread]


_EXITING_PROGRAM = """
import sys, time
from effnet_tf.data.iterator_release import release_in_background

class SlowToDestroy:
    def __del__(self):
        time.sleep(3.0)  # leaves the GIL, like TF's iterator teardown
        open(sys.argv[1], "w").write("destroyed")

held_elsewhere = ["an object main keeps"]
release_in_background(held_elsewhere, wait_seconds=600)  # never let go: must not hold up the exit
release_in_background(SlowToDestroy())
print("main done", flush=True)
"""


@pytest.mark.slow
def test_the_process_waits_at_exit_for_a_destruction_in_progress(tmp_path):
    # A daemon thread still in TF's teardown when the interpreter finalizes aborts the process
    # (CI: "FATAL: exception not rethrown"); the exit hook lets it finish first, and does not
    # wait for a release whose object another owner still holds.
    marker = tmp_path / "destroyed"
    done = subprocess.run([sys.executable, "-c", _EXITING_PROGRAM, str(marker)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "main done" in done.stdout
    assert marker.read_text() == "destroyed"
    assert "Waiting (up to 90 s) for 1 tf.data input pipeline(s) to shut down" in done.stderr
