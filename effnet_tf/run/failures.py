"""Every way an ``effnet-train`` run can end, as one line and an exit code.

``describe(error)`` maps an exception to ``(exit code, message)``: bad input (a config value, a
file, the data, a checkpoint that does not fit) is exit 2 with a message that names the culprit
and the fix; a non-finite loss 3; a preemption 75; anything else (a failure of the run itself)
1, with the exception's type and the line that says what happened. TensorFlow's errors from
inside a compiled step carry the data pipeline's own message (``effnet_tf.data: ...``, naming
the shard or file and the record) under several lines of graph boilerplate: that line is
dug out. docs/troubleshooting.md lists the messages and what to do.
"""

from __future__ import annotations

import re
from typing import Tuple

import tensorflow as tf

from effnet_tf.storage.errors import error_line, error_lines

EXIT_FAILED = 1  # the run itself failed (not the input): see the message, rerun with --verbose
EXIT_BAD_INPUT = 2  # configuration, flags, files, data or checkpoints: fix the input, then run again
EXIT_NON_FINITE = 3  # the loss became NaN/inf; the last good checkpoint is kept
EXIT_PREEMPTED = 75  # SIGTERM: a checkpoint was saved at that step; run the same command to resume

# Python errors that mean "the input is wrong" when they reach the driver.
_BAD_INPUT = (ValueError, TypeError, KeyError, LookupError, FileNotFoundError, FileExistsError,
              NotADirectoryError, IsADirectoryError, PermissionError)
# TensorFlow errors about files and data rather than about the program.
_BAD_INPUT_TF = (tf.errors.NotFoundError, tf.errors.DataLossError, tf.errors.PermissionDeniedError,
                 tf.errors.FailedPreconditionError, tf.errors.AlreadyExistsError)


def _assertion_text(line: str) -> str:
    """``assertion failed: [a] [b c] [d]`` (how tf.debugging.Assert prints) -> ``a b c d``."""
    body = line.split("assertion failed:", 1)[1].strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    return re.sub(r"\] \[", " ", body).strip()


def op_error_text(error: BaseException) -> str:
    """The informative line of a TensorFlow error: the pipeline's own message, else the first
    line that is not graph boilerplate."""
    for line in error_lines(error):
        if "assertion failed:" in line:
            return _assertion_text(line).replace("effnet_tf.data: ", "data: ", 1)
    return error_line(error)


def describe(error: BaseException) -> Tuple[int, str]:
    """``(exit code, one-line message)`` for an exception that ended a run."""
    from effnet_tf.training.callbacks import NonFiniteLossError
    from effnet_tf.training.preemption import Preempted
    from effnet_tf.training.strategy import TPUUnavailableError

    if isinstance(error, Preempted):
        return EXIT_PREEMPTED, f"preempted: {error} (exit code {EXIT_PREEMPTED})"
    if isinstance(error, NonFiniteLossError):
        return EXIT_NON_FINITE, f"training stopped: {error}"
    if isinstance(error, tf.errors.OpError):
        text = op_error_text(error)
        if text.startswith("data: ") or isinstance(error, _BAD_INPUT_TF):
            return EXIT_BAD_INPUT, f"error: {text}"
        return EXIT_FAILED, f"the run failed: {type(error).__name__}: {text} (rerun with --verbose for the traceback)"
    if isinstance(error, _BAD_INPUT + (TPUUnavailableError,)):
        text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        return EXIT_BAD_INPUT, "error: " + " ".join(text.split())
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return EXIT_FAILED, (f"the run failed: {type(error).__name__}: {lines[0] if lines else ''} "
                         "(rerun with --verbose for the traceback)")
