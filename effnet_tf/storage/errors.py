"""The line of a TensorFlow I/O error that says what went wrong.

TensorFlow wraps a read failure (a damaged checkpoint, a truncated shard) in graph boilerplate:
a ``{{function_node ...}}`` prefix, an ``[Op:...]`` suffix, escaped quotes and lines of node
context. Every message that quotes such an error takes its line from here.
"""

from __future__ import annotations

import re

_PREFIX = re.compile(r"\{\{function_node [^}]*\}\}\s*")
_SUFFIX = re.compile(r"\s*\[Op:\w+\].*$")
_BOILERPLATE = ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ")


def error_lines(error: BaseException) -> list:
    """The non-empty lines of ``error``'s message, without TF's graph-node prefix."""
    message = getattr(error, "message", None) or str(error)
    message = _PREFIX.sub("", message).replace("\\'", "'")
    return [line.strip() for line in message.splitlines() if line.strip()]


def error_line(error: BaseException) -> str:
    """The first line of ``error`` that is not graph boilerplate (its type name if none)."""
    lines = error_lines(error)
    for line in lines:
        if not line.startswith(_BOILERPLATE):
            return _SUFFIX.sub("", line)
    return lines[0] if lines else type(error).__name__
