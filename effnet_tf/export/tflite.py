"""TFLite export: float32, dynamic-range or full-integer (int8), TFLite builtin ops only.

Input: pixels 0..255 ``[1, size, size, 3]`` (already cropped/resized to the serving size; the
batch dimension can be resized with ``Interpreter.resize_tensor_input``); the model normalizes
them inside. Output: ``probabilities`` ``[batch, classes]``. float32 in and out, except int8.

Conversion follows Keras 3's own path (``ExportArchive`` -> SavedModel -> ``from_saved_model``).

* Dynamic-range quantization (``tf.lite.Optimize.DEFAULT`` without a representative dataset)
  stores weights as int8 and quantizes activations on the fly per batch, about 4x smaller.
* Full-integer quantization (``"int8"``, for EdgeTPU, NNAPI, microcontrollers): int8 weights
  (per channel) and activations (per tensor), every op an int8 builtin, ranges calibrated on
  real images. Input is uint8 pixels with scale 1 and zero point 0 (raw pixels, no client-side
  scaling): the first calibration image gets one black and one white pixel, so the input's
  calibrated range is exactly 0..255 whatever the images (a fake-quant op on the input would pin
  it too, but makes the converter add a float dequantize/quantize pair). Output is uint8 probabilities, scale 1/256 (``probability = q / 256``). The scales and
  zero points are also in the interpreter's input/output details and in ``metadata.json``.
* ``"int16x8"`` (Python API only): int8 weights, int16 activations, float32 input and output.
  Much closer to the float model than int8 where its top-2 classes are close (see
  docs/export.md), but TFLite runs it with reference kernels (slow) and accelerators lack it.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable, Optional

import keras
import numpy as np
import tensorflow as tf

from effnet_tf.export import prepare
from effnet_tf.export.atomic import atomic_output
from effnet_tf.export.signatures import PIXELS, model_scores

QUANTIZATIONS = (None, "dynamic_range", "int8", "int16x8")
_CALIBRATED = ("int8", "int16x8")


def check_quantize(quantize, calibration_images) -> None:
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}.")
    if quantize in _CALIBRATED and calibration_images is None:
        raise ValueError(f"quantize={quantize!r} needs calibration_images: a few hundred real images [N, size, size, 3] "
                         "of 0..255 pixels, preprocessed as for evaluation (the training split's, not the eval's).")


def _representative_dataset(calibration_images, image_size: int):
    """``calibration_images`` (array or iterable of images/batches) as the converter's one-image samples."""

    def samples():
        count = 0
        for item in calibration_images:
            batch = np.asarray(item, dtype=np.float32)
            batch = batch[None] if batch.ndim == 3 else batch
            if batch.ndim != 4 or batch.shape[1:] != (image_size, image_size, 3):
                raise ValueError(f"calibration images must be [size, size, 3] or [N, size, size, 3] with size "
                                 f"{image_size}, got shape {tuple(np.shape(item))}.")
            for image in batch:
                if count == 0:  # pins the input range to 0..255: see the module docstring
                    image = image.copy()
                    image[0, 0], image[0, -1] = 0.0, 255.0
                count += 1
                yield [image[None]]
        if count == 0:
            raise ValueError("calibration_images is empty: int8 quantization needs real images to calibrate on.")

    return samples


def convert_tflite(model: keras.Model, image_size: int, quantize: Optional[str] = None,
                   calibration_images: Optional[Iterable] = None) -> bytes:
    """The TFLite flatbuffer of ``model`` at ``image_size`` (``model`` already checked).

    ``calibration_images`` (for ``quantize="int8"``/``"int16x8"`` only): images ``[size, size, 3]`` or batches
    ``[N, size, size, 3]`` of 0..255 pixels, preprocessed as the model is served.
    """
    check_quantize(quantize, calibration_images)
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
        if quantize in _CALIBRATED:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = _representative_dataset(calibration_images, image_size)
        if quantize == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        if quantize == "int16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        return converter.convert()


def quantization_details(flatbuffer: bytes) -> dict:
    """``{"input": {...}, "output": {...}}``: dtype, scale and zero point of a TFLite model's
    input and output, as its interpreter reports them (scale 0: not quantized)."""
    from effnet_tf.export.tflite_runtime import interpreter as tflite_interpreter

    interpreter = tflite_interpreter(model_content=flatbuffer)

    def describe(detail):
        scale, zero_point = detail["quantization"]
        return {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}

    return {"input": describe(interpreter.get_input_details()[0]),
            "output": describe(interpreter.get_output_details()[0])}


def export_tflite(
    model: keras.Model,
    path: str,
    *,
    image_size: Optional[int] = None,
    quantize: Optional[str] = None,
    calibration_images: Optional[Iterable] = None,
    overwrite: bool = False,
) -> str:
    """Writes ``model`` as a TFLite file at ``path`` (atomically; existing ``path`` refused
    unless ``overwrite``).

    Args:
        image_size: the fixed input size; default ``model.variant.eval_size`` (required for
            custom blocks).
        quantize: ``None`` (float32), ``"dynamic_range"`` (int8 weights), ``"int8"`` (int8
            weights and activations, uint8 input pixels and output probabilities) or
            ``"int16x8"`` (int8 weights, int16 activations, float32 input/output).
        calibration_images: for ``"int8"``/``"int16x8"``: a few hundred real images ``[N, size, size, 3]``
            (0..255, preprocessed as for evaluation) to calibrate the activation ranges on.
    Returns:
        ``path``.
    """
    check_quantize(quantize, calibration_images)
    prepare.check_classifier(model)
    image_size = prepare.resolve_image_size(model, image_size)
    with atomic_output(path, overwrite=overwrite) as temporary:
        with tf.io.gfile.GFile(temporary, "wb") as handle:
            handle.write(convert_tflite(prepare.inference_model(model), image_size, quantize, calibration_images))
    return path
