"""The recipe's optimizer pieces: LR schedules, RMSProp/SGD with an EMA of the weights, weight decay.

Reused from Keras 3: ``ExponentialDecay`` and ``CosineDecay`` schedules, the optimizers and their
built-in EMA (``use_ema=True``). Changed, and why:

* The EMA also covers the BatchNorm moving statistics (``track_moving_statistics``), as the
  official code's ``ExponentialMovingAverage`` over ``trainable_variables + moving_mean/var``
  does: Keras' EMA covers trainable weights only, which would pair averaged weights with the
  last steps' raw statistics at eval and export.
* EMA decay warm-up ``min(decay, (1 + step) / (10 + step))`` (``tf.train.ExponentialMovingAverage``
  with ``num_updates``, as the official code): with a fixed 0.9999 a short run evaluates
  nearly its initial weights.
* ``finalize_variable_values`` is a no-op. Keras calls it at the end of every ``fit``, copying
  the EMA into the model. We call ``fit`` once per progressive stage, so that would restart each
  stage from the averaged weights; instead the EMA is swapped in explicitly for eval/export
  (``ema_weights``) and swapped back.
* The L2 weight decay is a per-variable regularizer on kernels only, scaled by
  ``1 / num_replicas``: Keras adds regularization losses unscaled while the data loss is scaled
  per replica, so under N replicas the summed gradients would apply N times the decay.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List

import keras
import tensorflow as tf
from keras import ops

_PACKAGE = "effnet_tf"
KERNEL_NAMES = ("kernel", "depthwise_kernel")


# ---------------------------------------------------------------------------------------------
# Learning rate


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


# ---------------------------------------------------------------------------------------------
# Optimizers with the EMA handled for multi-fit training


def _tf_variable(variable):
    """The ``tf.Variable`` (mirrored or replica-local under a strategy) behind a Keras variable."""
    return variable.value if isinstance(variable, keras.Variable) else variable


class _EMAMixin:
    """EMA with decay warm-up, distribution-safe updates, and no overwrite at the end of ``fit``."""

    def _init_ema(self, ema_warmup: bool) -> None:
        self.ema_warmup = bool(ema_warmup)
        # (moving statistic, its average), see track_moving_statistics. Set around the trackers:
        # the statistics are the model's, and must not be checkpointed a second time here.
        object.__setattr__(self, "_statistics_pairs", ())

    def track_moving_statistics(self, statistics) -> int:
        """Keeps an EMA of ``statistics`` (BatchNorm moving means/variances: non-trainable
        variables the forward pass updates) with the weights' decay and warm-up; returns how many.

        Call once, after ``build``, in the strategy's scope. The averages are optimizer variables
        (checkpointed with it) and, like the statistics, replica-local and averaged when read
        (ON_READ + MEAN): each replica averages its own statistics with no communication, and the
        mean of the replicas' averages is the average of the replicas' mean, the EMA being linear.
        """
        if not self.use_ema or self._statistics_pairs:
            return 0
        averages = []
        for statistic in statistics:
            variable = _tf_variable(statistic)
            averages.append(tf.Variable(
                tf.zeros(variable.shape, variable.dtype), trainable=False,
                name=variable.name.split(":")[0].replace("/", "_") + "_average",
                synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.MEAN))
        self.statistics_averages = averages  # tracked: saved and restored with the optimizer
        object.__setattr__(self, "_statistics_pairs", tuple(zip(statistics, averages)))
        return len(averages)

    @property
    def moving_statistics_pairs(self):
        """``(statistic, average)`` for each tracked moving statistic (empty when none)."""
        return list(self._statistics_pairs)

    def _update_statistics_moving_average(self):
        """In replica context, before the weights' merge call: each replica's own copy."""
        if not self._statistics_pairs:
            return
        decay = self.current_ema_decay()
        for statistic, average in self._statistics_pairs:
            value = tf.cast(_tf_variable(statistic), average.dtype)
            rate = tf.cast(decay, average.dtype)
            average.assign(rate * average + (1.0 - rate) * value)

    def current_ema_decay(self):
        decay = ops.cast(self.ema_momentum, "float32")
        step = ops.cast(self.iterations, "float32")
        if self.ema_warmup:
            decay = ops.minimum(decay, (1.0 + step) / (10.0 + step))
        # Keras' convention: the first update copies the weights (the average starts at zero).
        return ops.where(ops.equal(step, 0.0), 0.0, decay)

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        self._update_statistics_moving_average()
        pairs = [
            (_tf_variable(var), _tf_variable(avg))
            for var, avg in zip(trainable_variables, self._model_variables_moving_average)
            if avg is not None
        ]

        def update(average, variable):
            decay = ops.cast(self.current_ema_decay(), average.dtype)
            return average.assign(decay * average + (1.0 - decay) * ops.cast(variable, average.dtype))

        def merged(distribution, pairs):
            for var, avg in pairs:
                distribution.extended.update(avg, update, args=(var,), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(merged, self._distribution_strategy, pairs)

    def finalize_variable_values(self, var_list):
        """Deliberately a no-op: see the module docstring and ``ema_weights``."""

    def get_config(self):
        config = super().get_config()
        config["ema_warmup"] = self.ema_warmup
        return config


#: Where Keras 3's optimizers keep their per-weight moment estimates (SGD, Adam, RMSprop).
_MOMENT_SLOTS = ("momentums", "_momentums", "_velocities", "_average_gradients")


def reset_moments(optimizer) -> int:
    """Zeroes the optimizer's moment estimates (RMSProp's mean square to ``initial_rms``), keeping
    the step count and the EMA of the weights; returns how many variables were reset. After a
    divergence they hold the exploding gradients, and a rerun at a lower LR would apply them again."""
    count = 0
    for slot in _MOMENT_SLOTS:
        for variable in getattr(optimizer, slot, None) or []:
            value = getattr(optimizer, "initial_rms", 0.0) if slot == "_velocities" and isinstance(
                optimizer, keras.optimizers.RMSprop) else 0.0
            variable.assign(ops.full(variable.shape, value, dtype=variable.dtype))
            count += 1
    return count


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EMARMSprop(_EMAMixin, keras.optimizers.RMSprop):
    """``keras.optimizers.RMSprop`` with the recipe's EMA handling (see ``_EMAMixin``).

    ``initial_rms`` is the starting value of the mean-square accumulator. Keras starts it at 0,
    which makes the first updates about ``lr / sqrt(1 - rho)`` = 3.2 lr per weight whatever the
    gradient's size; TF1's ``tf.train.RMSPropOptimizer``, which the official EfficientNet code
    uses, starts it at 1, so early updates are about ``lr * gradient``.
    """

    def __init__(self, *args, ema_warmup: bool = True, initial_rms: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ema(ema_warmup)
        self.initial_rms = float(initial_rms)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        if self.initial_rms:
            for velocity in self._velocities:
                velocity.assign(ops.full(velocity.shape, self.initial_rms, dtype=velocity.dtype))

    def get_config(self):
        config = super().get_config()
        config["initial_rms"] = self.initial_rms
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EMASGD(_EMAMixin, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with the recipe's EMA handling (see ``_EMAMixin``)."""

    def __init__(self, *args, ema_warmup: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ema(ema_warmup)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EMAAdam(_EMAMixin, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with the recipe's EMA handling (for short from-scratch runs)."""

    def __init__(self, *args, ema_warmup: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ema(ema_warmup)


def build_optimizer(train_config, learning_rate) -> keras.optimizers.Optimizer:
    """RMSProp (rho, momentum, epsilon from the config), SGD with momentum, or Adam; EMA if ``ema_decay``."""
    t = train_config
    use_ema = bool(t.ema_decay)
    ema = dict(use_ema=use_ema, ema_momentum=float(t.ema_decay) if use_ema else 0.99, ema_warmup=t.ema_warmup)
    if t.optimizer == "rmsprop":
        return EMARMSprop(learning_rate=learning_rate, rho=t.rmsprop_rho, momentum=t.momentum,
                          epsilon=t.epsilon, initial_rms=t.rmsprop_initial_rms, **ema)
    if t.optimizer == "sgd":
        return EMASGD(learning_rate=learning_rate, momentum=t.momentum, nesterov=False, **ema)
    if t.optimizer == "adam":
        return EMAAdam(learning_rate=learning_rate, **ema)
    raise ValueError(f"train.optimizer={t.optimizer!r} is not one of rmsprop, sgd, adam.")


def base_optimizer(optimizer):
    """The optimizer under a ``LossScaleOptimizer`` (mixed_float16), or ``optimizer`` itself."""
    return getattr(optimizer, "inner_optimizer", optimizer)


# ---------------------------------------------------------------------------------------------
# EMA weights for evaluation and export


def _swap_statistics_with_average(optimizer) -> None:
    """Swaps each replica's copy of a statistic with its average, replica by replica (exact, no
    communication; the copies of a replica-local variable may differ)."""
    strategy = optimizer._distribution_strategy
    for statistic, average in getattr(optimizer, "moving_statistics_pairs", []):
        for mine, average_copy in zip(strategy.experimental_local_results(_tf_variable(statistic)),
                                      strategy.experimental_local_results(average)):
            with tf.device(mine.device):
                saved = tf.identity(mine)
                mine.assign(average_copy)
                average_copy.assign(saved)


def _swap_with_average(optimizer) -> None:
    strategy = optimizer._distribution_strategy

    def swap(variable, average):
        saved = tf.identity(variable)
        variable.assign(average)
        average.assign(saved)

    with strategy.scope():
        for var, avg in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
            if avg is None:
                continue
            strategy.extended.update(_tf_variable(var), swap, args=(_tf_variable(avg),), group=True)
    _swap_statistics_with_average(optimizer)


def has_ema(model_or_optimizer) -> bool:
    optimizer = getattr(model_or_optimizer, "optimizer", model_or_optimizer)
    optimizer = base_optimizer(optimizer)
    return bool(getattr(optimizer, "use_ema", False)) and hasattr(optimizer, "_model_variables_moving_average")


@contextlib.contextmanager
def ema_weights(model: keras.Model, enabled: bool = True) -> Iterator[bool]:
    """Puts the EMA weights (and the EMA of the BatchNorm statistics, when the optimizer tracks
    them) into ``model`` for the ``with`` body and the trained ones back after.

    Yields whether the EMA is in use (False when the optimizer has none or ``enabled`` is False).
    The swap is exact (values are exchanged, not recomputed) and distribution-aware.
    """
    if not enabled or not has_ema(model):
        yield False
        return
    optimizer = base_optimizer(model.optimizer)
    _swap_with_average(optimizer)
    try:
        yield True
    finally:
        _swap_with_average(optimizer)


# ---------------------------------------------------------------------------------------------
# Weight decay


@keras.saving.register_keras_serializable(package=_PACKAGE)
class KernelL2(keras.regularizers.Regularizer):
    """``weight_decay * sum(w ** 2) / 2`` (``tf.nn.l2_loss``), divided by the number of replicas."""

    def __init__(self, weight_decay: float):
        self.weight_decay = float(weight_decay)

    def __call__(self, x):
        loss = self.weight_decay * 0.5 * ops.sum(ops.square(ops.cast(x, "float32")))
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / float(replicas) if replicas > 1 else loss

    def get_config(self):
        return {"weight_decay": self.weight_decay}


def batchnorm_statistics(model: keras.Model) -> List[keras.Variable]:
    """Every BatchNorm layer's moving mean and variance, in layer order."""
    statistics = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            statistics += [layer.moving_mean, layer.moving_variance]
    return statistics


def kernel_variables(model: keras.Model) -> List[keras.Variable]:
    """Conv, depthwise-conv and dense kernels: what the recipe decays (not BN, not biases)."""
    return [v for v in model.trainable_weights if v.name in KERNEL_NAMES]


def apply_weight_decay(model: keras.Model, weight_decay: float) -> int:
    """Attaches ``KernelL2(weight_decay)`` to every kernel of ``model``; returns how many.

    The regularization losses then appear in ``model.losses`` and Keras adds them to the loss.
    """
    kernels = kernel_variables(model)
    regularizer = KernelL2(weight_decay) if weight_decay else None
    for variable in kernels:
        variable.regularizer = regularizer
    return len(kernels) if regularizer else 0
