"""The runtime a ``.tflite`` file is checked and run in: LiteRT (``ai-edge-litert``, the
``[litert]`` extra), TensorFlow's successor to ``tf.lite.Interpreter``, which TensorFlow 2.21
deprecates. Without LiteRT installed, ``tf.lite.Interpreter`` is used, deprecation notice and all.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf


def _litert_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    return Interpreter


def runtime_name() -> str:
    """``"ai-edge-litert X.Y.Z"`` or ``"tf.lite (TensorFlow X.Y.Z)"``: what ``interpreter`` uses."""
    if _litert_interpreter() is not None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"ai-edge-litert {version('ai-edge-litert')}"
        except PackageNotFoundError:
            return "ai-edge-litert"
    return f"tf.lite (TensorFlow {tf.__version__})"


def interpreter(model_path: Optional[str] = None, model_content: Optional[bytes] = None):
    """A TFLite interpreter (not yet allocated) for a file or a flatbuffer."""
    if (model_path is None) == (model_content is None):
        raise ValueError("interpreter() needs exactly one of model_path and model_content.")
    cls = _litert_interpreter() or tf.lite.Interpreter
    if model_path is not None:
        return cls(model_path=model_path)
    return cls(model_content=model_content)
