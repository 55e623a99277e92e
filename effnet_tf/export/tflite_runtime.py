"""The runtime a ``.tflite`` file is checked and run in: LiteRT (``ai-edge-litert``, the
``[litert]`` extra), TensorFlow's successor to ``tf.lite.Interpreter``, which TensorFlow 2.21
deprecates. Without LiteRT installed, ``tf.lite.Interpreter`` is used, deprecation notice and all.

``TFLiteClassifier`` runs an exported file on float pixels whatever its input and output types
(float32, or the quantized uint8/int8/int16 of full-integer files), so every caller (the export
report, ``effnet-predict``, the benchmarks) feeds and reads them the same way.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


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
    import tensorflow as tf

    return f"tf.lite (TensorFlow {tf.__version__})"


def interpreter(model_path: Optional[str] = None, model_content: Optional[bytes] = None):
    """A TFLite interpreter (not yet allocated) for a file or a flatbuffer."""
    if (model_path is None) == (model_content is None):
        raise ValueError("interpreter() needs exactly one of model_path and model_content.")
    cls = _litert_interpreter()
    if cls is None:
        import tensorflow as tf

        cls = tf.lite.Interpreter
    if model_path is not None:
        return cls(model_path=model_path)
    return cls(model_content=model_content)


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Float ``values`` in the dtype of the input ``detail`` (scale and zero point applied)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype)
    if scale:
        values = np.round(values / scale + zero_point)
    limits = np.iinfo(dtype)
    return np.clip(values, limits.min, limits.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    values = values.astype(np.float32)
    return (values - zero_point) * scale if scale else values


class TFLiteClassifier:
    """An exported ``.tflite`` classifier: float pixels ``[N, size, size, 3]`` (0..255) in,
    float probabilities ``[N, classes]`` out, for float32, dynamic-range and quantized files alike.
    """

    def __init__(self, model_path: Optional[str] = None, model_content: Optional[bytes] = None):
        self.interpreter = interpreter(model_path=model_path, model_content=model_content)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = None

    @property
    def image_size(self) -> int:
        return int(self.input["shape"][1])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels, dtype=np.float32)
        expected = (self.image_size, self.image_size, 3)
        if pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise ValueError(f"this TFLite file takes pixels [N, {expected[0]}, {expected[1]}, 3], "
                             f"got shape {list(pixels.shape)}.")
        if self._batch != len(pixels):
            self.interpreter.resize_tensor_input(self.input["index"], [len(pixels), *expected])
            self.interpreter.allocate_tensors()
            self._batch = len(pixels)
        self.interpreter.set_tensor(self.input["index"], _quantize(pixels, self.input))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)
