"""``export_all``: every serving format plus ``metadata.json`` in one directory, written atomically.

Layout of ``export_dir``::

    saved_model/                  SavedModel (serving_default, predict_pixels, predict_pixels_uint8)
    model.keras                   Keras 3 file for fine-tuning (needs `import effnet_tf`)
    model_float32.tflite          TFLite, float32
    model_dynamic_range.tflite    TFLite, int8 weights (dynamic-range quantization)
    model_int8.tflite             TFLite, full integer (formats "tflite_int8"; needs calibration images)
    model_int16x8.tflite          TFLite, int16 activations (formats "tflite_int16x8"; calibration images)
    model.onnx                    ONNX of predict_pixels (formats "onnx"; tf2onnx, checked in ONNX Runtime)
    metadata.json                 variant, image size, class names, input note, versions
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from effnet_tf.config.schema import DEFAULT_EXPORT_FORMATS, EXPORT_FORMATS
from effnet_tf.data.preprocessing import check_crop_fraction, official_crop_fraction
from effnet_tf.export import prepare
from effnet_tf.export.atomic import atomic_output, check_cancel
from effnet_tf.export.keras_file import write_keras
from effnet_tf.export.layout import (
    KERAS_FILE,
    METADATA_FILE,
    ONNX_FILE,
    SAVED_MODEL_DIR,
    TFLITE_FILES,
    TFLITE_FORMATS,
)
from effnet_tf.export.onnx import check_onnx_available, convert_onnx, verify_onnx
from effnet_tf.export.report import build_report
from effnet_tf.export.saved_model import write_saved_model
from effnet_tf.export.signatures import IMAGE_BYTES, OUTPUTS, PIXELS, SIGNATURES, head_activation
from effnet_tf.export.tflite import check_quantize, convert_tflite, quantization_details
from effnet_tf.storage.paths import join


INPUT_NOTE = (
    "Models take RGB pixels in 0..255 (uint8 or float) and normalize them inside; do not scale "
    "or normalize on the client. serving_default takes encoded image bytes (JPEG, PNG, GIF, BMP, WebP, JPEG XL) and applies the "
    "evaluation preprocessing (the central crop_fraction of the shorter side, 1 = the whole image, "
    "resized to image_size). predict_pixels / predict_pixels_uint8 and the TFLite files take "
    "pixels as they are (TFLite: float32 [1, image_size, image_size, 3]; model_int8.tflite: uint8 "
    "pixels in, uint8 probabilities x 256 out, see tflite_int8 for the scales)."
)


def _check_formats(formats: Sequence[str]) -> tuple:
    if isinstance(formats, str):
        formats = (formats,)
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {EXPORT_FORMATS}, got {list(formats)!r}.")
    return tuple(dict.fromkeys(formats))


def build_metadata(model: keras.Model, image_size: int, class_names, top_k: int, files: Dict[str, str],
                   extra: Optional[Dict[str, Any]] = None, crop_fraction: Optional[float] = None) -> Dict[str, Any]:
    """The ``metadata.json`` record of an export."""
    import effnet_tf

    variant = getattr(model, "variant", None)
    metadata = {
        "format": "effnet_tf export",
        "format_version": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": model.name,
            "variant": variant.name if variant is not None else None,
            "blocks": list(getattr(model, "blocks_strings", []) or []) or None,
            "width": getattr(model, "width", None),
            "depth": getattr(model, "depth", None),
            "num_classes": prepare.num_classes(model),
            "head": head_activation(model) or "logits",
            "parameters": int(model.count_params()),
        },
        "image_size": image_size,
        "crop_fraction": round(official_crop_fraction(image_size) if crop_fraction is None else float(crop_fraction), 6),
        "normalization": getattr(model, "normalization", None),
        "input": INPUT_NOTE,
        "class_names": class_names,
        "top_k": top_k,
        "signatures": {
            name: {"input": IMAGE_BYTES if name == SIGNATURES[0] else PIXELS, "outputs": list(OUTPUTS)}
            for name in SIGNATURES
        },
        "files": files,
        "versions": {"effnet_tf": effnet_tf.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__},
    }
    if extra:
        metadata.update(extra)
    return metadata


def read_metadata(export_dir: str) -> Optional[Dict[str, Any]]:
    """``export_dir/metadata.json`` as a dict, or None when there is none."""
    path = join(export_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as handle:
        return json.load(handle)


CHECK_IMAGES = 32


def _check_images(check_images, check_images_are: str, calibration_images, image_size: int) -> Tuple[np.ndarray, str]:
    """What the ONNX file and the report check on, and what those images are: ``check_images``,
    else up to 32 calibration images, else 8 seeded random ones."""
    for images, origin in ((check_images, check_images_are), (calibration_images, "calibration images")):
        if isinstance(images, np.ndarray) and len(images):
            return images[:CHECK_IMAGES].astype(np.float32), f"{min(len(images), CHECK_IMAGES)} {origin}"
    random = np.random.default_rng(0).uniform(0, 255, (8, image_size, image_size, 3)).astype(np.float32)
    return random, "8 random-pixel images (no calibration or check images given)"


def _write_onnx(serving_model, temporary: str, has_saved_model: bool, images: np.ndarray, **saved_model_args):
    """``model.onnx`` from the export's SavedModel (or one written for it), verified in ONNX
    Runtime; returns the record for ``metadata.json``."""
    with tempfile.TemporaryDirectory(prefix="effnet_onnx_") as scratch:
        saved = join(temporary, SAVED_MODEL_DIR)
        if not has_saved_model:
            saved = os.path.join(scratch, SAVED_MODEL_DIR)
            write_saved_model(serving_model, saved, **saved_model_args)
        local = os.path.join(scratch, ONNX_FILE)
        convert_onnx(saved, local)
        record = verify_onnx(local, saved, images)
        tf.io.gfile.copy(local, join(temporary, ONNX_FILE), overwrite=True)
    return record


def export_all(
    model: keras.Model,
    export_dir: str,
    *,
    formats: Sequence[str] = DEFAULT_EXPORT_FORMATS,
    image_size: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    top_k: int = 5,
    overwrite: bool = False,
    metadata: Optional[Dict[str, Any]] = None,
    options: Optional[tf.saved_model.SaveOptions] = None,
    calibration_images: Optional[Iterable] = None,
    crop_fraction: Optional[float] = None,
    cancel=None,
    report: bool = True,
    check_images: Optional[np.ndarray] = None,
    check_images_are: str = "check images",
    progress: Optional[Callable[[str], None]] = None,
) -> str:
    """Writes ``formats`` of ``model`` (its current weights) and ``metadata.json`` to ``export_dir``.

    ``formats``: any of "saved_model", "keras", "tflite" (writes both the float32 and the
    dynamic-range file) and "tflite_int8" (full-integer, calibrated on ``calibration_images``:
    see ``export_tflite``; its input/output scales go to ``metadata.json``), "tflite_int16x8"
    (int8 weights, int16 activations, float32 in and out; calibrated the same way) and "onnx" (see
    ``effnet_tf.export.onnx``; the check against the SavedModel goes to ``metadata.json``). The whole
    directory is written beside ``export_dir`` and renamed onto it at the end, so it is complete
    or absent; an existing ``export_dir`` is refused unless ``overwrite``. ``metadata`` adds keys
    to ``metadata.json`` (e.g. the checkpoint). Other arguments (``crop_fraction`` too: recorded in
    ``metadata.json``) as ``export_saved_model``. ``cancel`` (a ``threading.Event``, set by a
    termination signal) stops the export between formats, and before the final rename at the
    latest, with ``ExportCancelled``: nothing appears at ``export_dir``.
    ``report``: run every written file in its own runtime (``effnet_tf.export.report``) on
    ``check_images`` (float pixels ``[N, size, size, 3]``; default: up to 32 calibration images,
    else 8 random ones; ``check_images_are`` says what they are) and store the report in
    ``metadata.json`` (``format_report`` prints it).
    ``progress(text)`` is told which step is running.
    Returns ``export_dir``.
    """
    formats = _check_formats(formats)
    check_crop_fraction(crop_fraction)
    quantizations = [q for export_format in formats for q in TFLITE_FORMATS.get(export_format, ())]
    for quantize in quantizations:  # before any file is written
        check_quantize(quantize, calibration_images)
    if "onnx" in formats:
        check_onnx_available()
    serving_model, image_size, class_names, top_k = prepare.checked_inputs(model, image_size, class_names, top_k)
    images, images_origin = _check_images(check_images, check_images_are, calibration_images, image_size)
    say = progress or (lambda text: None)
    files: Dict[str, str] = {}
    with atomic_output(export_dir, overwrite=overwrite, cancel=cancel) as temporary:
        tf.io.gfile.makedirs(temporary)
        if "saved_model" in formats:
            write_saved_model(serving_model, join(temporary, SAVED_MODEL_DIR), image_size=image_size,
                              class_names=class_names, top_k=top_k, options=options, crop_fraction=crop_fraction)
            files["saved_model"] = SAVED_MODEL_DIR
        check_cancel(cancel, export_dir)
        if "keras" in formats:
            write_keras(serving_model, join(temporary, KERAS_FILE))
            files["keras"] = KERAS_FILE
        extra = dict(metadata or {})
        for quantize in quantizations:
            check_cancel(cancel, export_dir)
            say(f"converting to TFLite ({quantize or 'float32'})")
            flatbuffer = convert_tflite(serving_model, image_size, quantize, calibration_images)
            with tf.io.gfile.GFile(join(temporary, TFLITE_FILES[quantize]), "wb") as handle:
                handle.write(flatbuffer)
            files[f"tflite_{quantize or 'float32'}"] = TFLITE_FILES[quantize]
            if quantize == "int8":
                extra["tflite_int8"] = quantization_details(flatbuffer)
        if "onnx" in formats:
            check_cancel(cancel, export_dir)
            say("converting to ONNX (tf2onnx) and checking it in ONNX Runtime")
            extra["onnx"] = _write_onnx(serving_model, temporary, "saved_model" in formats, image_size=image_size,
                                        class_names=class_names, top_k=top_k, crop_fraction=crop_fraction,
                                        images=images)
            files["onnx"] = ONNX_FILE
        if report:
            check_cancel(cancel, export_dir)
            extra["report"] = build_report(temporary, files, serving_model, image_size, images,
                                           progress=lambda key: say(f"report: running {files[key]}"))
            extra["report"]["check_images_are"] = images_origin
        record = build_metadata(serving_model, image_size, class_names, top_k, files, extra, crop_fraction)
        with tf.io.gfile.GFile(join(temporary, METADATA_FILE), "w") as handle:
            json.dump(record, handle, indent=2)
            handle.write("\n")
    return export_dir
