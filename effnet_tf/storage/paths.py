"""File-system helpers that treat local paths and ``gs://`` (any ``scheme://``) URLs alike.

Local paths use ``os`` (``os.replace`` is atomic on POSIX); URLs go through ``tf.io.gfile``,
where an object is written whole or not at all but a rename is a copy followed by a delete.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid

import tensorflow as tf


def is_remote(path: str) -> bool:
    """True for URLs such as ``gs://bucket/dir``."""
    return "://" in str(path)


def join(directory: str, *parts: str) -> str:
    """``os.path.join`` that keeps ``gs://`` URLs intact."""
    if is_remote(directory):
        return "/".join([str(directory).rstrip("/"), *parts])
    return os.path.join(directory, *parts)


def basename(path: str) -> str:
    """The last component of a local path or URL."""
    return str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def parent(path: str) -> str:
    """The directory that holds ``path`` (absolute for local paths)."""
    path = str(path).rstrip("/")
    return posixpath.dirname(path) if is_remote(path) else os.path.dirname(os.path.abspath(path))


def exists(path: str) -> bool:
    """True when ``path`` exists (a dangling local symlink counts)."""
    return tf.io.gfile.exists(path) if is_remote(path) else os.path.lexists(path)


def mtime(path: str):
    """Last-modified time in seconds since the epoch, or None when ``path`` is missing."""
    try:
        if is_remote(path):
            return tf.io.gfile.stat(path).mtime_nsec / 1e9
        return os.path.getmtime(path)
    except (OSError, tf.errors.OpError):
        return None


def makedirs(path: str) -> None:
    tf.io.gfile.makedirs(path)


def remove(path: str) -> None:
    """Removes a file or a directory tree; a missing path is fine."""
    if is_remote(path):
        if not tf.io.gfile.exists(path):
            return
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        else:
            tf.io.gfile.remove(path)
    elif os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def rename(source: str, target: str) -> None:
    """Renames ``source`` onto the (absent) ``target``."""
    if is_remote(source):
        tf.io.gfile.rename(source, target, overwrite=False)
    else:
        os.rename(source, target)


def read_text(path: str) -> str:
    with tf.io.gfile.GFile(path, "r") as handle:
        return handle.read()


def write_text(path: str, text: str) -> None:
    """Writes ``text`` so that a reader sees the old file or the new one, never half of one.

    Local: a temporary sibling renamed over ``path``. gs://: one object upload, which is atomic.
    """
    makedirs(parent(path))
    if is_remote(path):
        with tf.io.gfile.GFile(path, "w") as handle:
            handle.write(text)
        return
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def append_line(path: str, line: str) -> None:
    """Appends one line (gs:// has no append: the object is rewritten)."""
    line = line.rstrip("\n") + "\n"
    if is_remote(path):
        old = read_text(path) if tf.io.gfile.exists(path) else ""
        with tf.io.gfile.GFile(path, "w") as handle:
            handle.write(old + line)
        return
    with open(path, "a+", encoding="utf-8") as handle:
        # A process killed mid-write can leave a partial last line: start on a fresh one.
        if handle.tell() > 0:
            handle.seek(handle.tell() - 1)
            if handle.read(1) != "\n":
                line = "\n" + line
        handle.write(line)
        handle.flush()
