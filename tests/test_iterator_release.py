"""Used tf.data iterators are destroyed on a background thread, not in the training loop."""

import threading
import weakref

import tensorflow as tf

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
