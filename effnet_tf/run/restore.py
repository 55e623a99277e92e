"""A finished (or running) training run, brought back from its directory: rebuild the model from
``config.yaml``, restore a checkpoint (model + optimizer, so the EMA of the weights comes back
too) and export it through ``export_trained``, the export at the end of training.

No data is read, except the calibration images of a ``tflite_int8``/``tflite_int16x8`` export: only the class names
are asked of the data source, and when that fails (the data is not reachable from this machine)
the labels are the class indices.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from effnet_tf.config.io import load_yaml_files
from effnet_tf.config.schema import ExperimentConfig, copy_config
from effnet_tf.export.atomic import check_target
from effnet_tf.export.prepare import float32_policy
from effnet_tf.model.from_config import build_from_config
from effnet_tf.storage import paths
from effnet_tf.storage.run_directory import RunDirectory
from effnet_tf.training.checkpoint import Progress, make_checkpoint
from effnet_tf.training.loop import CheckpointMismatchError
from effnet_tf.run.export_run import export_trained
from effnet_tf.training.plan import Plan, make_plan
from effnet_tf.training.task import attach_optimizer

log = logging.getLogger(__name__)


def _find_checkpoint(run_dir: RunDirectory, checkpoint: Optional[str]) -> str:
    if not tf.io.gfile.isdir(run_dir.root):
        raise FileNotFoundError(f"no checkpoint in {run_dir.checkpoints!r}: model_dir {run_dir.root!r} does not exist.")
    if checkpoint:
        if not tf.io.gfile.exists(checkpoint + ".index"):
            raise FileNotFoundError(f"Checkpoint {checkpoint!r} not found (no {checkpoint}.index).")
        return checkpoint
    path = run_dir.latest_checkpoint()
    if not path:
        raise FileNotFoundError(
            f"no checkpoint in {run_dir.checkpoints!r} (model_dir {run_dir.root!r}): train first, "
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


def restore_from_model_dir(model_dir: str, checkpoint: Optional[str] = None,
                           config: Optional[ExperimentConfig] = None) -> Tuple[keras.Model, Any, Dict[str, Any]]:
    """``(model, config, info)``: the model of ``model_dir`` with ``checkpoint`` (default: the
    latest) restored, compiled with its optimizer (so ``ema_weights(model)`` swaps in the EMA).

    ``info`` has ``checkpoint`` and ``global_step``. Raises ``FileNotFoundError`` naming the
    directory when there is no checkpoint.
    """
    run_dir = RunDirectory(model_dir)
    path = _find_checkpoint(run_dir, checkpoint)
    config = config or load_config(model_dir)
    model = build_model_from_config(config)
    attach_optimizer(model, config, config.train.steps_per_epoch)
    progress = Progress(config.train.steps_per_epoch)
    status = make_checkpoint(model, model.optimizer, progress).restore(path)
    # Every weight, slot and EMA variable built here must come from the checkpoint.
    status.assert_existing_objects_matched()
    status.expect_partial()
    return model, config, {"checkpoint": path, "global_step": progress.global_step}


def check_checkpoints_fit(run_dir: Optional[RunDirectory], config: ExperimentConfig) -> None:
    """Raises ``CheckpointMismatchError`` when ``run_dir``'s checkpoints belong to another model
    than ``config``'s (so the message names what changed, not a tensor shape)."""
    if run_dir is None or not paths.exists(run_dir.config_file) or run_dir.latest_checkpoint() is None:
        return
    from effnet_tf.config.compare import differences

    changes = differences(load_yaml_files([run_dir.config_file]), config)
    if changes:
        raise CheckpointMismatchError(
            f"model_dir {run_dir.root} holds checkpoints of another model ({'; '.join(changes)}, from its "
            "config.yaml to this run): use a new --model_dir, or the original settings.")


def reachable_source(config: ExperimentConfig):
    """The run's data source, or None when this machine cannot open it."""
    try:
        from effnet_tf.data.from_config import open_source

        return open_source(config.data)
    except Exception:  # noqa: BLE001 (the data may live where this machine cannot read it)
        return None


def restored_plan(config: ExperimentConfig, source=None) -> Plan:
    """The ``Plan`` of a restored run: one replica, this process reading (not writing) the run.
    A run's own config.yaml is resolved already; for another config ``source`` (when reachable)
    gives the number of training examples."""
    train_examples = None
    if source is not None:
        try:
            train_examples = source.num_examples(config.data.train_split)
        except Exception:  # noqa: BLE001 (a split this source cannot count)
            pass
    return make_plan(config, num_classes=config.model.num_classes, train_examples=train_examples, writer=False)


def export_run_directory(config: ExperimentConfig, say=print) -> str:
    """``effnet-train --mode=export``: the latest checkpoint of ``runtime.model_dir`` exported as
    at the end of training (``export_trained``), to ``export.dir`` (default ``<model_dir>/export``),
    replacing it only with ``export.overwrite``. Reads the run, never writes it; the data only
    for class names and int8 calibration."""
    model_dir = config.runtime.model_dir
    if not model_dir:
        raise ValueError("--mode=export needs --model_dir (the run to export).")
    source = reachable_source(config)  # opened once: plan, class names, int8 calibration
    plan = restored_plan(config, source)
    check_checkpoints_fit(plan.run_dir, plan.config)
    check_target(plan.export_dir, plan.config.export.overwrite)  # before the (slow) restore
    model, _, info = restore_from_model_dir(model_dir, config=plan.config)
    out = export_trained(model, plan, checkpoint=info["checkpoint"], global_step=info["global_step"],
                         source=source, overwrite=plan.config.export.overwrite, say=say)
    say(f"Exported {info['checkpoint']} ({', '.join(plan.config.export.formats)}): {out}")
    return out


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
    config: Optional[ExperimentConfig] = None,
    report: Optional[bool] = None,
) -> str:
    """Exports the latest checkpoint of a training ``model_dir`` (``export_trained``, as at the
    end of training).

    Args:
        model_dir: the run's directory (``config.yaml`` + ``checkpoints/``), local or gs://.
        export_dir: default ``<model_dir>/export``.
        checkpoint: a checkpoint prefix (default: the latest in ``model_dir``).
        image_size: default the run's ``eval.image_size`` (from its config.yaml).
        class_names: default the data source's class names, when it can be reached.
        use_ema: export the EMA of the weights when the run kept one (the recipe's choice).
        formats: as ``export_all``; default the run's ``export.formats``. ``tflite_int8`` and
            ``tflite_int16x8`` read ``export.calibration_examples`` images of the run's training split.
        top_k, overwrite: as ``export_all``.
        config: the run's config (default: its ``config.yaml``).
        report: run the export report (default: the run's ``export.report``).
    Returns:
        ``export_dir``.
    """
    export_dir = export_dir or RunDirectory(model_dir).export
    check_target(export_dir, overwrite)  # before the (slow) restore
    model, config, info = restore_from_model_dir(model_dir, checkpoint, config=config)
    config = copy_config(config)
    config.export.use_ema = bool(use_ema)
    if formats:
        config.export.formats = list(formats)
    if report is not None:
        config.export.report = bool(report)
    if image_size:
        config.eval.image_size = int(image_size)
    source = reachable_source(config)
    export_trained(model, restored_plan(config, source), checkpoint=info["checkpoint"],
                   global_step=info["global_step"], source=source, overwrite=overwrite, export_dir=export_dir,
                   class_names=class_names, top_k=top_k)
    log.info("Exported %s (step %d) to %s", info["checkpoint"], info["global_step"], export_dir)
    return export_dir
