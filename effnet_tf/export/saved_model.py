"""SavedModel export with serving signatures (``serving_default``, ``predict_pixels``,
``predict_pixels_uint8``; see ``effnet_tf.export.signatures``), through Keras 3's
``ExportArchive``. The result loads with ``tf.saved_model.load``, ``saved_model_cli`` and
TF Serving, with no effnet_tf code.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf

from effnet_tf.export import prepare
from effnet_tf.export.atomic import atomic_output
from effnet_tf.export.signatures import serving_functions


def write_saved_model(
    model: keras.Model,
    path: str,
    *,
    image_size: int,
    class_names: Optional[Sequence[str]] = None,
    top_k: int = 5,
    options: Optional[tf.saved_model.SaveOptions] = None,
    crop_fraction: Optional[float] = None,
) -> str:
    """Writes the SavedModel at ``path`` directly (not atomic; ``model`` already checked)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (function, input_signature) in serving_functions(model, image_size, class_names, top_k,
                                                                crop_fraction).items():
        archive.add_endpoint(name, function, input_signature=input_signature)
    archive.write_out(path, options=options, verbose=False)
    return path


def export_saved_model(
    model: keras.Model,
    export_dir: str,
    *,
    image_size: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    top_k: int = 5,
    overwrite: bool = False,
    options: Optional[tf.saved_model.SaveOptions] = None,
    crop_fraction: Optional[float] = None,
) -> str:
    """Exports ``model`` (its current weights) as a SavedModel directory at ``export_dir``.

    Signatures: ``serving_default`` (``image_bytes``: encoded image strings (JPEG, PNG, GIF, BMP, WebP, JPEG XL) [N], decoded and
    centrally cropped/resized to ``image_size`` as in evaluation), ``predict_pixels`` (float32)
    and ``predict_pixels_uint8`` (``pixels`` [N, H, W, 3], 0..255, any size). Each returns
    ``probabilities``, ``top_k_indices``, ``top_k_scores`` and ``top_k_labels``.

    Args:
        model: an image classifier that takes 0..255 pixels (e.g. ``effnet_tf.build_model``);
            logits heads get a softmax, softmax/sigmoid heads are used as they are.
        export_dir: target directory (local or ``gs://``); written atomically.
        image_size: serving size; default ``model.variant.eval_size`` (required for custom blocks).
        class_names: one name per class for ``top_k_labels`` (default: the indices as strings).
        top_k: how many classes the top-k outputs hold (capped at the number of classes).
        overwrite: replace an existing ``export_dir`` (else ``FileExistsError``).
        options: ``tf.saved_model.SaveOptions`` (e.g. ``experimental_io_device`` on a TPU VM).
        crop_fraction: ``serving_default``'s central crop as a fraction of the shorter side (1: the
            whole image); None: the official ``size/(size+32)`` below 320 px. Use the run's
            ``data.eval_crop_fraction`` so serving sees what evaluation saw.
    Returns:
        ``export_dir``.
    """
    serving_model, image_size, class_names, top_k = prepare.checked_inputs(model, image_size, class_names, top_k)
    with atomic_output(export_dir, overwrite=overwrite) as temporary:
        write_saved_model(serving_model, temporary, image_size=image_size, class_names=class_names,
                          top_k=top_k, options=options, crop_fraction=crop_fraction)
    return export_dir
