"""The recipe's learning-rate schedules, in optimizer steps.

Reused from Keras 3: ``ExponentialDecay`` and ``CosineDecay``. Added: a linear warmup around any
schedule (``WarmupSchedule``), a constant schedule, and ``ScaledAfter`` (fine-tuning: the LR
scaled once the backbone unfreezes). All serialize through ``get_config``.
"""

from __future__ import annotations

import keras
from keras import ops

_PACKAGE = "effnet_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then ``after(step)`` (step counted from 0)."""

    def __init__(self, after, warmup_steps: int, peak: float):
        self.after = after
        self.warmup_steps = int(warmup_steps)
        self.peak = float(peak)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        after = ops.cast(self.after(step), "float32")
        if self.warmup_steps <= 0:
            return after
        warm = self.peak * step / float(self.warmup_steps)
        return ops.where(step < self.warmup_steps, warm, after)

    def get_config(self):
        return {
            "after": keras.saving.serialize_keras_object(self.after),
            "warmup_steps": self.warmup_steps,
            "peak": self.peak,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["after"] = keras.saving.deserialize_keras_object(config["after"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConstantSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A constant learning rate (the fine-tuning recipe's, after warmup)."""

    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, step):
        return ops.cast(self.value, "float32") + 0.0 * ops.cast(step, "float32")

    def get_config(self):
        return {"value": self.value}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ScaledAfter(keras.optimizers.schedules.LearningRateSchedule):
    """``inner(step)``, multiplied by ``scale`` from ``boundary_step`` on (fine-tuning: the head
    trains alone first, then the whole network at a lower rate)."""

    def __init__(self, inner, boundary_step: int, scale: float):
        self.inner = inner
        self.boundary_step = int(boundary_step)
        self.scale = float(scale)

    def __call__(self, step):
        value = ops.cast(self.inner(step), "float32")
        return ops.where(ops.cast(step, "float32") < self.boundary_step, value, value * self.scale)

    def get_config(self):
        return {"inner": keras.saving.serialize_keras_object(self.inner), "boundary_step": self.boundary_step,
                "scale": self.scale}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["inner"] = keras.saving.deserialize_keras_object(config["inner"])
        return cls(**config)


def peak_learning_rate(base_learning_rate: float, global_batch_size: int) -> float:
    """The recipe's linear scaling: ``base x batch / 256``."""
    return base_learning_rate * global_batch_size / 256.0


def build_lr_schedule(train_config, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """The schedule of ``train_config`` (see ``TrainConfig``) in optimizer steps.

    exponential: warmup, then ``peak x rate ** floor(step / (decay_epochs x steps_per_epoch))``;
    cosine: warmup, then cosine from the peak to ``lr_min_ratio x peak`` at the last step;
    constant: warmup, then the peak. With ``freeze_backbone_epochs``, multiplied by
    ``finetune_lr_scale`` once the backbone trains.
    """
    schedule = _decay_schedule(train_config, steps_per_epoch)
    t = train_config
    if getattr(t, "freeze_backbone_epochs", 0) and t.finetune_lr_scale != 1.0:
        return ScaledAfter(schedule, t.freeze_backbone_epochs * steps_per_epoch, t.finetune_lr_scale)
    return schedule


def _decay_schedule(train_config, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    t = train_config
    peak = peak_learning_rate(t.base_learning_rate, t.global_batch_size)
    warmup = int(round(t.warmup_epochs * steps_per_epoch))
    total = int(t.epochs * steps_per_epoch)
    if t.lr_schedule == "exponential":
        decay_steps = max(1, int(round(t.lr_decay_epochs * steps_per_epoch)))
        after = keras.optimizers.schedules.ExponentialDecay(peak, decay_steps, t.lr_decay_rate, staircase=True)
        return WarmupSchedule(after, warmup, peak)
    if t.lr_schedule == "cosine":
        decay_steps = max(1, total - warmup)
        if warmup > 0:
            return keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps, alpha=t.lr_min_ratio, warmup_target=peak, warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=t.lr_min_ratio)
    if t.lr_schedule == "constant":
        return WarmupSchedule(ConstantSchedule(peak), warmup, peak)
    raise ValueError(f"train.lr_schedule={t.lr_schedule!r} is not one of exponential, cosine, constant.")
