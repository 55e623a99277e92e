"""The image-classification task as pure factories (TF Model Garden's *task*): the model with its
optimizer, loss and metrics, the checkpoint, and the input pipelines of a plan.

Training (``effnet_tf.training.loop``) and restoring a run to evaluate or export it
(``effnet_tf.run.restore``) build their objects here, so they agree on what a checkpoint holds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional

import keras
import tensorflow as tf

from effnet_tf.data.pipeline import build_dataset
from effnet_tf.model.from_config import build_from_config, load_initial_weights
from effnet_tf.model.transfer import freeze_batchnorm
from effnet_tf.storage.paths import is_remote
from effnet_tf import keras_internals
from effnet_tf.training.checkpoint import CheckpointState, Progress
from effnet_tf.training.lr_schedules import build_lr_schedule
from effnet_tf.training.optimizer import base_optimizer, build_optimizer
from effnet_tf.training.weight_decay import apply_weight_decay, batchnorm_statistics
from effnet_tf.training.plan import Plan
from effnet_tf.training.schedule import Stage
from effnet_tf.training.strategy import set_precision


@dataclasses.dataclass
class Components:
    """What one run trains and checkpoints."""

    model: keras.Model
    progress: Progress
    checkpoint: Optional[CheckpointState]  # None without a run directory
    initial_weights: Optional[Dict[str, Any]] = None  # copy counts when model.weights was loaded

    @property
    def optimizer(self):
        """The optimizer that holds the slots and the EMA (inside a LossScaleOptimizer, if any)."""
        return base_optimizer(self.model.optimizer)


def attach_optimizer(model: keras.Model, config, steps_per_epoch: int, *, jit_compile: bool = False) -> None:
    """Compiles ``model`` with the recipe's optimizer, loss and metrics (after freezing its
    BatchNorm layers when ``train.freeze_batchnorm``), and builds every optimizer variable now (slots, EMA of the weights and BN statistics, a LossScaleOptimizer's scale): they are then restored eagerly, and the
    train step never creates variables (which would make tf.function trace it twice)."""
    t = config.train
    if getattr(t, "freeze_batchnorm", False):  # before the optimizer: frozen BN weights get no slots
        freeze_batchnorm(model)
    optimizer = build_optimizer(t, build_lr_schedule(t, steps_per_epoch))
    if config.runtime.precision == "mixed_float16":  # as Keras' compile would under that policy
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    k = min(5, config.model.num_classes)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=t.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="top1"), keras.metrics.TopKCategoricalAccuracy(k=k, name="top5")],
        steps_per_execution=config.runtime.steps_per_loop,
        jit_compile=jit_compile,
    )
    model.optimizer.build(model.trainable_variables)
    if t.ema_batchnorm:
        base_optimizer(model.optimizer).track_moving_statistics(batchnorm_statistics(model))
    _build_compiled_state(model, config.model.num_classes)


def _build_compiled_state(model: keras.Model, num_classes: int) -> None:
    """Builds the compiled loss and metrics from shapes, and turns off Keras' own way of doing it.

    Keras starts every ``fit``/``evaluate`` by pulling a batch from a second iterator over the
    dataset and ``strategy.reduce``-ing it, only to learn its shapes: under
    MultiWorkerMirroredStrategy that reduce is a cross-worker collective which fails on an
    ``(images, labels)`` batch, and everywhere it starts the input pipeline twice per stage.
    """
    images = keras.KerasTensor((None, None, None, 3), "float32")
    labels = keras.KerasTensor((None, num_classes), "float32")
    keras_internals.build_compiled_state(model, (images, labels))


def checkpoint_io_device(plan: Plan) -> Optional[str]:
    """A remote TPU worker cannot write this host's local disk: checkpoint I/O runs here."""
    model_dir = plan.config.runtime.model_dir
    return "/job:localhost" if plan.on_tpu and model_dir and not is_remote(model_dir) else None


def build_components(plan: Plan, strategy: tf.distribute.Strategy) -> Components:
    """Precision, seed, then model + optimizer + progress in ``strategy``'s scope, and the
    checkpoint in the run directory (not restored: see ``TrainingLoop.restore``)."""
    c = plan.config
    set_precision(c.runtime.precision)
    keras.utils.set_random_seed(c.runtime.seed)
    counts = None
    with strategy.scope():
        model = build_from_config(c.model)
        if c.model.weights:
            counts = load_initial_weights(model, c.model.weights)
        apply_weight_decay(model, c.train.weight_decay)
        attach_optimizer(model, c, plan.steps_per_epoch, jit_compile=plan.jit_compile)
        progress = Progress(plan.steps_per_epoch)
    checkpoint = None
    if plan.run_dir is not None:
        checkpoint = CheckpointState(plan.run_dir.checkpoints, model, model.optimizer, progress,
                                     max_to_keep=c.runtime.keep_checkpoints, io_device=checkpoint_io_device(plan),
                                     write_directory=plan.run_dir.checkpoint_directory())
    return Components(model=model, progress=progress, checkpoint=checkpoint, initial_weights=counts)


def epoch_seed(plan: Plan, start_epoch: int) -> int:
    """The data seed of a stage started (or resumed) at ``start_epoch``."""
    return (plan.config.runtime.seed * 1_000_003 + start_epoch) % (2**31 - 1)


def train_dataset_fn(plan: Plan, source, stage: Stage, start_epoch: int) -> Callable:
    """``input_context -> dataset`` of ``stage`` at its planned size, repeating forever."""
    c = plan.config

    def dataset_fn(input_context):
        return build_dataset(
            source, split=c.data.train_split, image_size=stage.image_size,
            global_batch_size=c.train.global_batch_size, training=True,
            randaug_magnitude=stage.randaug_magnitude, randaug_layers=c.data.randaug_layers,
            randaug_policy=c.data.randaug_policy, flip_probability=c.data.flip_probability,
            mixup_alpha=stage.mixup_alpha, cutmix_alpha=stage.cutmix_alpha, crop_area_min=c.data.crop_area_min,
            seed=epoch_seed(plan, start_epoch), input_context=input_context, drop_remainder=True,
            shuffle_buffer=c.data.shuffle_buffer, cache=c.data.cache, skip_corrupt=c.data.skip_corrupt,
            crop_fraction=plan.train_crop_fallback,
        ).repeat()

    return dataset_fn


def eval_dataset_fn(plan: Plan, source) -> Callable:
    """``input_context -> dataset`` of the eval split at the plan's eval size (one pass)."""
    c = plan.config

    def dataset_fn(input_context):
        return build_dataset(
            source, split=c.data.eval_split, image_size=plan.eval_size, global_batch_size=c.eval.batch_size,
            training=False, input_context=input_context, drop_remainder=c.eval.drop_remainder,
            cache=c.data.cache, skip_corrupt=c.data.skip_corrupt, crop_fraction=c.data.eval_crop_fraction,
        )

    return dataset_fn
