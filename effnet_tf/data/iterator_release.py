"""Destroying a used ``tf.data`` iterator off the main thread.

Destroying an iterator that has run a while blocks the destroying thread until tf.data's
autotuning thread wakes up, which the cancellation does not hurry (TF 2.21): it sleeps out its
current optimization period, which doubles up to 60 s over the iterator's life. Measured here at
the end of a training ``fit``: 15-35 s stalls at stage boundaries and run ends (gdb: main thread
in ``~LogicalThreadWrapper``, the ``tf_data_model`` thread in ``Model::OptimizeLoop``'s wait).
The wait is idle, so a background thread can sit it out while training goes on at the next size.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

#: How long the release thread waits for the other owners of the object to let go.
OWNER_WAIT_SECONDS = 120.0


def release_in_background(obj: Any, wait_seconds: float = OWNER_WAIT_SECONDS) -> threading.Thread:
    """Drops a reference to ``obj`` on a daemon thread, once that is the last reference.

    The caller passes its reference and keeps none. Others may still hold ``obj`` (Keras holds a
    ``fit``'s iterator until ``fit`` returns): the thread waits, up to ``wait_seconds``, until it
    is the sole owner, so the destructor runs there and not in whichever thread lets go last.
    Returns the thread (already started).
    """
    holder = [obj]
    del obj

    def release():
        deadline = time.monotonic() + wait_seconds
        # getrefcount: the holder's reference + the call's argument = 2 when nobody else holds it.
        while sys.getrefcount(holder[0]) > 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        holder.clear()

    thread = threading.Thread(target=release, name="effnet-iterator-release", daemon=True)
    thread.start()
    return thread
