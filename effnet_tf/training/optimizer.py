"""The recipe's optimizers: RMSProp, SGD and Adam with an EMA of the weights that suits training
in several ``fit`` calls (one per progressive stage).

Reused from Keras 3: the optimizers and their built-in EMA (``use_ema=True``). Changed, and why:

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
  (``effnet_tf.training.ema.ema_weights``) and swapped back.

The Keras internals these classes rely on are listed, with why, in ``effnet_tf.keras_internals``.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from effnet_tf import keras_internals

_PACKAGE = "effnet_tf"


def tf_variable(variable):
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
            variable = tf_variable(statistic)
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
            value = tf.cast(tf_variable(statistic), average.dtype)
            rate = tf.cast(decay, average.dtype)
            average.assign(rate * average + (1.0 - rate) * value)

    def current_ema_decay(self):
        decay = ops.cast(self.ema_momentum, "float32")
        step = ops.cast(self.iterations, "float32")
        if self.ema_warmup:
            decay = ops.minimum(decay, (1.0 + step) / (10.0 + step))
        # Keras' convention: the first update copies the weights (the average starts at zero).
        return ops.where(ops.equal(step, 0.0), 0.0, decay)

    def _update_model_variables_moving_average(self, trainable_variables):  # keras_internals.INTERNALS
        if not self.use_ema:
            return
        self._update_statistics_moving_average()
        pairs = [
            (tf_variable(var), tf_variable(avg))
            for var, avg in keras_internals.ema_pairs(self, trainable_variables)
            if avg is not None
        ]

        def update(average, variable):
            decay = ops.cast(self.current_ema_decay(), average.dtype)
            return average.assign(decay * average + (1.0 - decay) * ops.cast(variable, average.dtype))

        def merged(distribution, pairs):
            for var, avg in pairs:
                distribution.extended.update(avg, update, args=(var,), group=False)

        keras_internals.merge_call(merged, keras_internals.optimizer_strategy(self), pairs)

    def finalize_variable_values(self, var_list):
        """Deliberately a no-op: see the module docstring and ``ema_weights``."""

    def get_config(self):
        config = super().get_config()
        config["ema_warmup"] = self.ema_warmup
        return config


def reset_moments(optimizer) -> int:
    """Zeroes the optimizer's moment estimates (RMSProp's mean square to ``initial_rms``), keeping
    the step count and the EMA of the weights; returns how many variables were reset. After a
    divergence they hold the exploding gradients, and a rerun at a lower LR would apply them again."""
    count = 0
    for variable, mean_square in keras_internals.moment_estimates(optimizer):
        value = getattr(optimizer, "initial_rms", 0.0) if mean_square else 0.0
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
            for velocity in keras_internals.rmsprop_mean_squares(self):
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
