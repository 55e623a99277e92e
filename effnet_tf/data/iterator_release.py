"""Destroying a used ``tf.data`` iterator off the main thread.

Destroying an iterator that has run a while blocks the destroying thread until tf.data's
autotuning thread wakes up, which the cancellation does not hurry (TF 2.21): it sleeps out its
current optimization period, which doubles up to 60 s over the iterator's life. Measured here at
the end of a training ``fit``: 15-35 s stalls at stage boundaries and run ends (gdb: main thread
in ``~LogicalThreadWrapper``, the ``tf_data_model`` thread in ``Model::OptimizeLoop``'s wait).
The wait is idle, so a background thread can sit it out while training goes on at the next size.

The process must not end while such a thread is inside the destructor: a daemon thread that
comes back from TF's C++ code after the interpreter has begun to finalize is unwound by force,
and TF aborts on that ("FATAL: exception not rethrown", then a segfault; seen once in CI, in a
worker that had just finished its run). So the first release registers an ``atexit`` hook that
lets every release thread finish before the interpreter finalizes (``EXIT_WAIT_SECONDS`` at
most), and tells those still waiting for other owners to let go at once.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from typing import Any, Set

#: How long the release thread waits for the other owners of the object to let go.
OWNER_WAIT_SECONDS = 120.0
#: How long the process waits at exit for destructions in progress (autotuning period <= 60 s).
EXIT_WAIT_SECONDS = 90.0
#: Exit waits longer than this are announced (the usual destruction takes milliseconds).
_QUIET_EXIT_SECONDS = 1.0

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_running: Set[threading.Thread] = set()
_exiting = threading.Event()
_exit_hook_registered = False


def release_in_background(obj: Any, wait_seconds: float = OWNER_WAIT_SECONDS) -> threading.Thread:
    """Drops a reference to ``obj`` on a daemon thread, once that is the last reference.

    The caller passes its reference and keeps none. Others may still hold ``obj`` (Keras holds a
    ``fit``'s iterator until ``fit`` returns): the thread waits, up to ``wait_seconds``, until it
    is the sole owner, so the destructor runs there and not in whichever thread lets go last.
    At interpreter exit the process waits for these threads (see the module docstring).
    Returns the thread (already started).
    """
    holder = [obj]
    del obj

    def release():
        try:
            deadline = time.monotonic() + wait_seconds
            # getrefcount: the holder's reference + the call's argument = 2 when nobody else
            # holds it. At exit, stop waiting: the other owner will destroy it.
            while (sys.getrefcount(holder[0]) > 2 and time.monotonic() < deadline
                   and not _exiting.is_set()):
                time.sleep(0.02)
            holder.clear()
        finally:
            with _lock:
                _running.discard(threading.current_thread())

    _register_exit_hook()
    thread = threading.Thread(target=release, name="effnet-iterator-release", daemon=True)
    with _lock:
        _running.add(thread)
    thread.start()
    return thread


def _register_exit_hook() -> None:
    # Registered at the first release, after TensorFlow's own atexit hooks: atexit runs hooks
    # last-in first-out, so this one runs while the TF runtime is still whole.
    global _exit_hook_registered
    with _lock:
        if not _exit_hook_registered:
            atexit.register(finish_releases)
            _exit_hook_registered = True


def finish_releases(timeout: float = EXIT_WAIT_SECONDS) -> int:
    """Lets the running release threads finish; returns how many are still running after
    ``timeout`` seconds (0 when all finished). Threads still waiting for other owners drop their
    reference at once (the last owner then destroys the object). Runs at interpreter exit."""
    _exiting.set()
    try:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            with _lock:  # (a forked child inherits the set, not the threads: is_alive() is False)
                running = [thread for thread in _running if thread.is_alive()]
            if not running:
                return 0
            left = deadline - time.monotonic()
            if left <= 0:
                _log.warning("%d tf.data iterator(s) still being destroyed after %.0f s; exiting "
                             "anyway", len(running), timeout)
                return len(running)
            running[0].join(min(left, _QUIET_EXIT_SECONDS))
            still = [thread for thread in running if thread.is_alive()]
            if still and not announced:
                _log.warning("Waiting (up to %.0f s) for %d tf.data input pipeline(s) to shut "
                             "down: tf.data's autotuning thread finishes its current period "
                             "first", left, len(still))
                announced = True
    finally:
        _exiting.clear()
