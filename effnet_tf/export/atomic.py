"""Atomic writes of export artifacts (directories or files), local or on ``gs://``.

Everything is written to ``<target>.tmp-<random>`` beside the target (same parent, so the
same filesystem) and renamed onto ``target`` only when complete. A server watching the target
path therefore sees either nothing or a whole artifact, never half of one. On failure (an
exception or Ctrl-C) the temporary path is removed; a process killed outright (SIGKILL) can
leave a ``*.tmp-*`` sibling behind, never a partial target, and the next export to that target
removes it.

Local paths use ``os.replace``/``os.rename`` (atomic on POSIX). On ``gs://`` a rename is a
copy followed by a delete (object stores have no rename), so the target appears object by
object: serve from a path that is only written by this rename, or copy a finished local
export up with ``gsutil -m cp -r``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

import tensorflow as tf

from effnet_tf.storage import paths


def check_target(target: str, overwrite: bool) -> None:
    """Refuses an existing ``target`` unless ``overwrite`` (call before any expensive work)."""
    if paths.exists(target) and not overwrite:
        raise FileExistsError(
            f"Export target {target!r} already exists; pass overwrite=True (--overwrite) to replace it."
        )


def remove_leftovers(target: str) -> list:
    """Deletes what an earlier export to ``target`` left when its process was killed outright
    (``<target>.tmp-<token>`` and ``<target>.old-<token>``); returns the paths removed.

    Exports to one target come from one process at a time (a run's chief), so whatever still
    matches when a new export starts is abandoned.
    """
    found = [p for pattern in (f"{target}.tmp-*", f"{target}.old-*") for p in tf.io.gfile.glob(pattern)]
    for path in found:
        paths.remove(path)
    return found


class ExportCancelled(RuntimeError):
    """The export was cancelled (a termination signal) before it was moved onto its target."""


def check_cancel(cancel, target: str) -> None:
    """Raises ``ExportCancelled`` when ``cancel`` (a ``threading.Event`` or None) is set."""
    if cancel is not None and cancel.is_set():
        raise ExportCancelled(f"export to {target} cancelled; nothing was written there.")


@contextlib.contextmanager
def atomic_output(target: str, overwrite: bool = False, suffix: str = "", cancel=None) -> Iterator[str]:
    """Yields a temporary path to write; moves it onto ``target`` when the block succeeds.

    The caller creates a file or a directory at the yielded path. An existing ``target`` is
    refused (``FileExistsError``) unless ``overwrite``; with ``overwrite`` the old target is
    moved aside first and deleted only after the new one is in place, so the window in which
    ``target`` is missing is two renames long. ``suffix`` ends the temporary name (Keras
    wants ``.keras`` on the files it writes). ``cancel`` (a ``threading.Event``), when set by
    the time the block ends, drops the work instead of moving it onto ``target``.
    """
    target = str(target).rstrip("/") if paths.is_remote(target) else os.path.abspath(str(target))
    check_target(target, overwrite)
    parent = paths.parent(target)
    paths.makedirs(parent)
    remove_leftovers(target)
    token = uuid.uuid4().hex[:12]
    temporary = f"{target}.tmp-{token}{suffix}"
    try:
        yield temporary
        check_cancel(cancel, target)
        if not paths.exists(temporary):
            raise RuntimeError(f"Export wrote nothing at {temporary!r}.")
        previous = None
        if paths.exists(target):
            if not overwrite:  # appeared while we were writing
                raise FileExistsError(f"Export target {target!r} appeared during the export; not replacing it.")
            previous = f"{target}.old-{token}"
            paths.rename(target, previous)
        try:
            paths.rename(temporary, target)
        except BaseException:
            if previous is not None:
                paths.rename(previous, target)  # put the old artifact back
            raise
        if previous is not None:
            paths.remove(previous)
    finally:
        paths.remove(temporary)
