"""ONNX export (``export.formats: [..., onnx]``; the ``[onnx]`` extra installs tf2onnx and
ONNX Runtime): the SavedModel's ``predict_pixels`` signature converted with tf2onnx, with a
dynamic batch and image size, then run in ONNX Runtime against the SavedModel on the same images.
The largest difference in probabilities (at most ``TOLERANCE``) goes to ``metadata.json``.

tf2onnx runs as its own process (``python -m tf2onnx.convert``, its documented entry point): it
rewrites TensorFlow's graph state while converting, and a crash there cannot take the exporting
process with it.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Dict

import numpy as np

OPSET = 17
TOLERANCE = 1e-4  # on probabilities
SIGNATURE = "predict_pixels"


def check_onnx_available() -> None:
    """Raises ``ImportError`` naming the extra when tf2onnx or ONNX Runtime is missing."""
    missing = []
    for module in ("tf2onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(f"export format 'onnx' needs {' and '.join(missing)}: pip install 'effnet_tf[onnx]' "
                          "(or drop 'onnx' from export.formats).")


def convert_onnx(saved_model_dir: str, path: str, opset: int = OPSET, timeout_s: float = 1800) -> None:
    """Converts ``saved_model_dir``'s ``predict_pixels`` signature to ``path``."""
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved_model_dir,
               "--signature_def", SIGNATURE, "--opset", str(opset), "--output", path]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"tf2onnx could not convert {saved_model_dir} (exit {result.returncode}): "
                           f"{lines[-1] if lines else 'no message'}")


def verify_onnx(path: str, saved_model_dir: str, images: np.ndarray) -> Dict[str, Any]:
    """Runs ``images`` (float32 pixels ``[N, H, W, 3]``) through ONNX Runtime and the SavedModel;
    returns what ``metadata.json`` records, or raises when they differ by more than ``TOLERANCE``."""
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    ours = session.run(["probabilities"], {"pixels": images.astype(np.float32)})[0]
    reference = tf.saved_model.load(saved_model_dir).signatures[SIGNATURE](
        pixels=tf.constant(images, tf.float32))["probabilities"].numpy()
    difference = float(np.abs(ours - reference).max()) if len(images) else 0.0
    if not difference <= TOLERANCE:
        raise RuntimeError(f"the ONNX model differs from the SavedModel by {difference:.3g} on probabilities "
                           f"(allowed {TOLERANCE}): not written.")
    return {"opset": OPSET, "signature": SIGNATURE, "dynamic_axes": ["batch", "height", "width"],
            "checked_images": int(len(images)), "max_abs_difference": difference,
            "top1_agreement": float((ours.argmax(1) == reference.argmax(1)).mean()) if len(images) else None,
            "onnxruntime": onnxruntime.__version__, "tf2onnx": tf2onnx.__version__}
