"""``export_trained``: the one way a trained run is exported, at the end of training, by
``--mode=export`` and by ``effnet_tf.run.export_from_model_dir`` alike.

It reads the run's ``Plan`` (formats, eval size and crop, export directory, TPU or not),
swaps in the EMA weights when the run keeps them (``export.use_ema``), asks the data source
only for what the export needs (the class names; calibration images for ``tflite_int8``/``tflite_int16x8``),
and records where the weights came from in ``metadata.json`` under ``source``.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any, Dict, List, Optional

import keras
import tensorflow as tf

from effnet_tf.data.calibration import calibration_images
from effnet_tf.export.bundle import CHECK_IMAGES, export_all, read_metadata
from effnet_tf.export.layout import CALIBRATED_FORMATS
from effnet_tf.export.report import format_report
from effnet_tf.storage import paths
from effnet_tf.training.ema import ema_weights
from effnet_tf.training.plan import Plan

log = logging.getLogger(__name__)
# The report's eval images: a short shuffle, so few records are read before the first (ImageNet's
# eval split holds 50,000); enough to mix the classes of most sources.
CHECK_SHUFFLE_BUFFER = 1024


def class_names_of(config, source=None) -> Optional[List[str]]:
    """The data source's class names (None when it has none, cannot be reached, or disagrees
    with the model's number of classes: the labels are then the class indices)."""
    try:
        if source is None:
            from effnet_tf.data.from_config import open_source

            source = open_source(config.data)
        names = source.class_names
    except Exception as error:  # noqa: BLE001 (the data may live where this machine cannot read it)
        log.warning("Class names unavailable from %s (%s); labels will be class indices.", config.data.name, error)
        return None
    if names is not None and len(names) != config.model.num_classes:
        log.warning("%s has %d class names for %d model classes; labels will be class indices.",
                    config.data.name, len(names), config.model.num_classes)
        return None
    return names


def export_calibration(config, formats, image_size: int, source=None):
    """The calibration images a ``tflite_int8`` or ``tflite_int16x8`` export needs
    (``export.calibration_examples`` of the training split, eval preprocessing, at ``image_size``),
    or None when ``formats`` has neither."""
    if not set(formats) & set(CALIBRATED_FORMATS):
        return None
    if source is None:
        from effnet_tf.data.from_config import open_source

        source = open_source(config.data)
    return calibration_images(source, config.data.train_split, image_size, config.export.calibration_examples,
                              seed=config.runtime.seed, crop_fraction=config.data.eval_crop_fraction)


def check_images_for(config, calibration, image_size: int, source=None):
    """The images the export report checks each file on when the export has no calibration images
    (which it uses then: None): up to 32 images of the eval split (eval preprocessing), or None
    (random pixels) when the data cannot be read here."""
    if calibration is not None:
        return None  # export_all checks on the calibration images
    try:
        if source is None:
            from effnet_tf.data.from_config import open_source

            source = open_source(config.data)
        return calibration_images(source, config.data.eval_split, image_size, CHECK_IMAGES,
                                  seed=config.runtime.seed, crop_fraction=config.data.eval_crop_fraction,
                                  shuffle_buffer=CHECK_SHUFFLE_BUFFER)
    except Exception as error:  # noqa: BLE001 (the data may live where this machine cannot read it)
        log.warning("No eval images for the export report (%s); it checks random pixels instead.", error)
        return None


def export_trained(model: keras.Model, plan: Plan, *, checkpoint: Optional[str], global_step: Optional[int] = None,
                   source=None, overwrite: bool = True, export_dir: Optional[str] = None, chief: bool = True,
                   class_names: Optional[List[str]] = None, top_k: int = 5, cancel=None, say=None) -> Optional[str]:
    """Writes ``export.formats`` of ``model`` (its EMA weights when ``export.use_ema`` and the
    optimizer keeps one) to ``export_dir`` (default the plan's) at the plan's eval size, atomically.

    ``source``: the opened data source, else it is opened only if the export needs it.
    ``class_names`` (default: the source's) and ``top_k``: as ``export_all``.
    ``chief``: False on the other workers of a multi-worker run, which take part (reading
    replicated weights can be a collective) but write to a temporary directory, deleted after.
    ``cancel``: a ``threading.Event`` that abandons the export (``ExportCancelled``).
    Returns the export directory (None when the plan has none).
    """
    c = plan.config
    target = export_dir or plan.export_dir
    if not target:
        return None
    formats = tuple(c.export.formats)
    class_names = class_names_of(c, source) if class_names is None else list(class_names)
    calibration = export_calibration(c, formats, plan.eval_size, source)
    report = c.export.report and chief
    check_images = check_images_for(c, calibration, plan.eval_size, source) if report else None
    if say is not None:
        say(f"Exporting {', '.join(formats)} ({plan.eval_size} px) to {target} ...")
    options = tf.saved_model.SaveOptions(experimental_io_device="/job:localhost") if plan.on_tpu else None
    scratch = None if chief else tempfile.mkdtemp(prefix="effnet_export_worker_")
    try:
        with ema_weights(model, enabled=c.export.use_ema) as used_ema:
            origin: Dict[str, Any] = {"checkpoint": checkpoint, "global_step": global_step, "ema": bool(used_ema),
                                      "model_dir": plan.run_dir.root if plan.run_dir else None}
            export_all(model, target if chief else paths.join(scratch, "export"), formats=formats,
                       image_size=plan.eval_size, class_names=class_names, top_k=top_k, overwrite=overwrite,
                       options=options,
                       metadata={"source": origin}, calibration_images=calibration,
                       crop_fraction=c.data.eval_crop_fraction, cancel=cancel,
                       report=report, check_images=check_images, check_images_are=f"{c.data.eval_split} images",
                       progress=None if say is None else (lambda text: say(f"  export: {text} ...")))
    finally:
        if scratch is not None:
            paths.remove(scratch)
    written = read_metadata(target) if report and say is not None else None
    if written and "report" in written:
        say(format_report(written["report"]))
    return target
