"""Export from a training ``model_dir``: rebuild the model from ``config.yaml``, restore a
checkpoint (model + optimizer, so the EMA of the weights comes back too) and export the EMA weights.

No data is read: only the class names are asked of the data source, and when that fails (the
data is not reachable from this machine) the labels are the class indices.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from effnet_tf.export.atomic import check_target
from effnet_tf.export.bundle import FORMATS, export_all, join

log = logging.getLogger(__name__)

DEFAULT_EXPORT_SUBDIR = "export"


def default_export_dir(model_dir: str) -> str:
    """``<model_dir>/export`` (its ``saved_model/`` is the trainer's default SavedModel path)."""
    return join(model_dir, DEFAULT_EXPORT_SUBDIR)


def latest_checkpoint(model_dir: str) -> Optional[str]:
    """The latest checkpoint prefix in ``model_dir`` (None when there is none)."""
    from effnet_tf.training.checkpointing import checkpoint_dir

    return tf.train.latest_checkpoint(checkpoint_dir(model_dir))


def _find_checkpoint(model_dir: str, checkpoint: Optional[str]) -> str:
    from effnet_tf.training.checkpointing import checkpoint_dir

    if not tf.io.gfile.isdir(model_dir):
        raise FileNotFoundError(f"model_dir {model_dir!r} does not exist.")
    if checkpoint:
        if not tf.io.gfile.exists(checkpoint + ".index"):
            raise FileNotFoundError(f"Checkpoint {checkpoint!r} not found (no {checkpoint}.index).")
        return checkpoint
    path = latest_checkpoint(model_dir)
    if not path:
        raise FileNotFoundError(
            f"No checkpoint in {checkpoint_dir(model_dir)!r} (model_dir {model_dir!r}): train first, "
            "or pass the checkpoint prefix explicitly.")
    return path


def load_config(model_dir: str):
    """The resolved ``ExperimentConfig`` the trainer wrote to ``model_dir/config.yaml``."""
    from effnet_tf.training import config as config_lib
    from effnet_tf.training.trainer import CONFIG_FILE

    path = join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist: {model_dir!r} is not a training model_dir "
                                "(the trainer writes its resolved config there).")
    return config_lib.load_yaml_files([path])


def build_model_from_config(config) -> keras.Model:
    """The trainer's model for ``config`` (same builder arguments: logits head, preprocessing
    inside), in float32 and with plain BatchNorm whatever the training precision was."""
    import effnet_tf
    from effnet_tf.export.prepare import _float32_policy
    from effnet_tf.training.config import model_build_kwargs

    with _float32_policy():
        return effnet_tf.build_model(**model_build_kwargs(config.model))


def _build_optimizer(config, model: keras.Model):
    """The trainer's optimizer (same class, EMA and wrapping), built so a restore fills it eagerly."""
    from effnet_tf.training.optimizer import build_lr_schedule, build_optimizer

    schedule = build_lr_schedule(config.train, config.train.steps_per_epoch)
    optimizer = build_optimizer(config.train, schedule)
    if config.runtime.precision == "mixed_float16":  # Keras' compile wraps it there
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer)
    getattr(optimizer, "inner_optimizer", optimizer).build(model.trainable_variables)
    return optimizer


def class_names_of(config) -> Optional[List[str]]:
    """The data source's class names (None when it has none or cannot be reached)."""
    try:
        from effnet_tf.training.trainer import open_source

        names = open_source(config.data).class_names
    except Exception as error:  # the data may live where this machine cannot read it
        log.warning("Class names unavailable from %s (%s); labels will be class indices.", config.data.name, error)
        return None
    if names is not None and len(names) != config.model.num_classes:
        log.warning("%s has %d class names for %d model classes; labels will be class indices.",
                    config.data.name, len(names), config.model.num_classes)
        return None
    return names


def restore_from_model_dir(model_dir: str, checkpoint: Optional[str] = None) -> Tuple[keras.Model, Any, Dict[str, Any]]:
    """``(model, config, info)``: the model of ``model_dir`` with ``checkpoint`` (default: the
    latest) restored, compiled with its optimizer (so ``ema_weights(model)`` swaps in the EMA).

    ``info`` has ``checkpoint`` and ``global_step``. Raises ``FileNotFoundError`` naming the
    directory when there is no checkpoint.
    """
    from effnet_tf.training.checkpointing import Progress

    path = _find_checkpoint(model_dir, checkpoint)
    config = load_config(model_dir)
    model = build_model_from_config(config)
    optimizer = _build_optimizer(config, model)
    progress = Progress(config.train.steps_per_epoch)
    status = tf.train.Checkpoint(model=model, optimizer=optimizer, progress=progress).restore(path)
    # Every weight, slot and EMA variable built here must come from the checkpoint.
    status.assert_existing_objects_matched()
    status.expect_partial()
    return model, config, {"checkpoint": path, "global_step": progress.global_step}


def export_from_model_dir(
    model_dir: str,
    export_dir: Optional[str] = None,
    *,
    checkpoint: Optional[str] = None,
    formats: Sequence[str] = FORMATS,
    image_size: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    top_k: int = 5,
    use_ema: bool = True,
    overwrite: bool = False,
) -> str:
    """Exports the latest checkpoint of a training ``model_dir`` with ``export_all``.

    Args:
        model_dir: the trainer's directory (``config.yaml`` + ``checkpoints/``), local or gs://.
        export_dir: default ``<model_dir>/export``.
        checkpoint: a checkpoint prefix (default: the latest in ``model_dir``).
        image_size: default the config's ``eval.image_size``.
        class_names: default the data source's class names, when it can be reached.
        use_ema: export the EMA of the weights when the run kept one (the recipe's choice).
        formats, top_k, overwrite: as ``export_all``.
    Returns:
        ``export_dir``.
    """
    from effnet_tf.training.optimizer import ema_weights

    export_dir = export_dir or default_export_dir(model_dir)
    check_target(export_dir, overwrite)  # before the (slow) restore
    model, config, info = restore_from_model_dir(model_dir, checkpoint)
    image_size = image_size or config.eval.image_size
    if class_names is None:
        class_names = class_names_of(config)
    with ema_weights(model, enabled=use_ema) as used_ema:
        info.update(ema=bool(used_ema), model_dir=model_dir)
        export_all(model, export_dir, formats=formats, image_size=image_size, class_names=class_names,
                   top_k=top_k, overwrite=overwrite, metadata={"source": info})
    log.info("Exported %s (step %d, %s weights) to %s", info["checkpoint"], info["global_step"],
             "EMA" if info["ema"] else "trained", export_dir)
    return export_dir
