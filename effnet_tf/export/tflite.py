"""TFLite export: float32 or dynamic-range quantized, TFLite builtin ops only (no Flex delegate).

Input: float32 pixels 0..255 ``[1, size, size, 3]`` (already cropped/resized to the serving
size; the batch dimension can be resized with ``Interpreter.resize_tensor_input``); the model
normalizes them inside. Output: ``probabilities`` ``[batch, classes]``.

Conversion follows Keras 3's own path (``ExportArchive`` -> SavedModel -> ``from_saved_model``).
Dynamic-range quantization (``tf.lite.Optimize.DEFAULT`` without a representative dataset)
stores weights as int8 and quantizes activations on the fly per batch, about 4x smaller.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional

import keras
import tensorflow as tf

from effnet_tf.export import prepare
from effnet_tf.export.atomic import atomic_output
from effnet_tf.export.signatures import PIXELS, model_scores

QUANTIZATIONS = (None, "dynamic_range")


def convert_tflite(model: keras.Model, image_size: int, quantize: Optional[str] = None) -> bytes:
    """The TFLite flatbuffer of ``model`` at ``image_size`` (``model`` already checked)."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}.")
    scores = model_scores(model)

    def serve(pixels):
        return {"probabilities": scores(pixels)}

    with tempfile.TemporaryDirectory(prefix="effnet_tflite_") as directory:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", serve, input_signature=[
            tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=PIXELS)])
        saved = os.path.join(directory, "saved_model")
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "dynamic_range":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def export_tflite(
    model: keras.Model,
    path: str,
    *,
    image_size: Optional[int] = None,
    quantize: Optional[str] = None,
    overwrite: bool = False,
) -> str:
    """Writes ``model`` as a TFLite file at ``path`` (atomically; existing ``path`` refused
    unless ``overwrite``).

    Args:
        image_size: the fixed input size; default ``model.variant.eval_size`` (required for
            custom blocks).
        quantize: ``None`` (float32) or ``"dynamic_range"`` (int8 weights).
    Returns:
        ``path``.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}.")
    prepare.check_classifier(model)
    image_size = prepare.resolve_image_size(model, image_size)
    with atomic_output(path, overwrite=overwrite) as temporary:
        with tf.io.gfile.GFile(temporary, "wb") as handle:
            handle.write(convert_tflite(prepare.inference_model(model), image_size, quantize))
    return path
