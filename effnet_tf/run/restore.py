"""A finished (or running) training run, brought back from its directory: rebuild the model from
``config.yaml``, restore a checkpoint (model + optimizer, so the EMA of the weights comes back
too) and export it.

No data is read, except the calibration images of a ``tflite_int8`` export: only the class names
are asked of the data source, and when that fails (the data is not reachable from this machine)
the labels are the class indices.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from effnet_tf.config.io import load_yaml_files
from effnet_tf.config.schema import ExperimentConfig
from effnet_tf.data.calibration import calibration_images
from effnet_tf.export.atomic import check_target
from effnet_tf.export.bundle import export_all
from effnet_tf.export.prepare import float32_policy
from effnet_tf.model.from_config import build_from_config
from effnet_tf.storage.run_directory import RunDirectory
from effnet_tf.training.checkpoint import Progress, make_checkpoint
from effnet_tf.training.optimizer import ema_weights
from effnet_tf.training.task import attach_optimizer

log = logging.getLogger(__name__)


def _find_checkpoint(run_dir: RunDirectory, checkpoint: Optional[str]) -> str:
    if not tf.io.gfile.isdir(run_dir.root):
        raise FileNotFoundError(f"model_dir {run_dir.root!r} does not exist.")
    if checkpoint:
        if not tf.io.gfile.exists(checkpoint + ".index"):
            raise FileNotFoundError(f"Checkpoint {checkpoint!r} not found (no {checkpoint}.index).")
        return checkpoint
    path = run_dir.latest_checkpoint()
    if not path:
        raise FileNotFoundError(
            f"No checkpoint in {run_dir.checkpoints!r} (model_dir {run_dir.root!r}): train first, "
            "or pass the checkpoint prefix explicitly.")
    return path


def load_config(model_dir: str) -> ExperimentConfig:
    """The resolved ``ExperimentConfig`` the run wrote to ``model_dir/config.yaml``."""
    path = RunDirectory(model_dir).config_file
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist: {model_dir!r} is not a training model_dir "
                                "(a run writes its resolved config there).")
    return load_yaml_files([path])


def build_model_from_config(config: ExperimentConfig) -> keras.Model:
    """The run's model for ``config`` (same builder arguments), in float32 and with plain
    BatchNorm whatever the training precision was."""
    with float32_policy():
        return build_from_config(config.model, for_training=False)


def class_names_of(config: ExperimentConfig) -> Optional[List[str]]:
    """The data source's class names (None when it has none or cannot be reached)."""
    try:
        from effnet_tf.data.from_config import open_source

        names = open_source(config.data).class_names
    except Exception as error:  # the data may live where this machine cannot read it
        log.warning("Class names unavailable from %s (%s); labels will be class indices.", config.data.name, error)
        return None
    if names is not None and len(names) != config.model.num_classes:
        log.warning("%s has %d class names for %d model classes; labels will be class indices.",
                    config.data.name, len(names), config.model.num_classes)
        return None
    return names


def export_calibration(config: ExperimentConfig, formats: Sequence[str], image_size: int, source=None):
    """The calibration images a ``tflite_int8`` export needs (``export.calibration_examples`` of
    the training split, eval preprocessing, at ``image_size``), or None when ``formats`` has none."""
    if "tflite_int8" not in formats:
        return None
    if source is None:
        from effnet_tf.data.from_config import open_source

        source = open_source(config.data)
    return calibration_images(source, config.data.train_split, image_size, config.export.calibration_examples,
                              seed=config.runtime.seed, crop_fraction=config.data.eval_crop_fraction)


def restore_from_model_dir(model_dir: str, checkpoint: Optional[str] = None) -> Tuple[keras.Model, Any, Dict[str, Any]]:
    """``(model, config, info)``: the model of ``model_dir`` with ``checkpoint`` (default: the
    latest) restored, compiled with its optimizer (so ``ema_weights(model)`` swaps in the EMA).

    ``info`` has ``checkpoint`` and ``global_step``. Raises ``FileNotFoundError`` naming the
    directory when there is no checkpoint.
    """
    run_dir = RunDirectory(model_dir)
    path = _find_checkpoint(run_dir, checkpoint)
    config = load_config(model_dir)
    model = build_model_from_config(config)
    attach_optimizer(model, config, config.train.steps_per_epoch)
    progress = Progress(config.train.steps_per_epoch)
    status = make_checkpoint(model, model.optimizer, progress).restore(path)
    # Every weight, slot and EMA variable built here must come from the checkpoint.
    status.assert_existing_objects_matched()
    status.expect_partial()
    return model, config, {"checkpoint": path, "global_step": progress.global_step}


def export_from_model_dir(
    model_dir: str,
    export_dir: Optional[str] = None,
    *,
    checkpoint: Optional[str] = None,
    formats: Optional[Sequence[str]] = None,
    image_size: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    top_k: int = 5,
    use_ema: bool = True,
    overwrite: bool = False,
) -> str:
    """Exports the latest checkpoint of a training ``model_dir`` with ``export_all``.

    Args:
        model_dir: the run's directory (``config.yaml`` + ``checkpoints/``), local or gs://.
        export_dir: default ``<model_dir>/export``.
        checkpoint: a checkpoint prefix (default: the latest in ``model_dir``).
        image_size: default the run's ``eval.image_size`` (from its config.yaml).
        class_names: default the data source's class names, when it can be reached.
        use_ema: export the EMA of the weights when the run kept one (the recipe's choice).
        formats: as ``export_all``; default the run's ``export.formats``. ``tflite_int8`` reads
            ``export.calibration_examples`` images of the run's training split.
        top_k, overwrite: as ``export_all``.
    Returns:
        ``export_dir``.
    """
    export_dir = export_dir or RunDirectory(model_dir).export
    check_target(export_dir, overwrite)  # before the (slow) restore
    model, config, info = restore_from_model_dir(model_dir, checkpoint)
    image_size = image_size or config.eval.image_size
    formats = tuple(formats or config.export.formats)
    if class_names is None:
        class_names = class_names_of(config)
    calibration = export_calibration(config, formats, image_size)
    with ema_weights(model, enabled=use_ema) as used_ema:
        info.update(ema=bool(used_ema), model_dir=model_dir)
        export_all(model, export_dir, formats=formats, image_size=image_size, class_names=class_names,
                   top_k=top_k, overwrite=overwrite, metadata={"source": info}, calibration_images=calibration,
                   crop_fraction=config.data.eval_crop_fraction)
    log.info("Exported %s (step %d, %s weights) to %s", info["checkpoint"], info["global_step"],
             "EMA" if info["ema"] else "trained", export_dir)
    return export_dir
