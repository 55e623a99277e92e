"""BatchNormalization that runs TensorFlow's fused kernel, in training and in inference.

Keras 3's BatchNormalization computes the batch moments and the normalization as separate
ops (and upcasts bfloat16 to float32 first). On the TensorFlow backend this layer runs
``FusedBatchNormV3`` instead: one kernel (oneDNN on CPU, cuDNN on GPU; XLA lowers it on TPU)
that, in training, computes the moments, normalizes and updates the moving statistics and, in
inference, normalizes with the moving statistics. Grappler can then fold the inference form
into the preceding convolution. The weights (gamma, beta, moving_mean, moving_variance) and the
semantics are Keras': a layer with ``trainable=False`` normalizes with its moving statistics
even when called with ``training=True`` (frozen BN for fine-tuning). It falls back to Keras'
code on other backends, for synchronized (cross-replica) BN, renorm, masks, float64 and
anything but 4-D channels-last input.

One difference in training only: the fused kernel updates the moving variance with the
unbiased batch variance (n / (n - 1), n = batch·height·width), as Keras 2 and the official
TF code did; Keras 3 uses the biased one.
"""

from __future__ import annotations

import contextlib

import keras

_fused_enabled = True
_statistics_frozen = False


@contextlib.contextmanager
def fused_batch_norm(enabled: bool):
    """Calls (and tf.function traces) inside this block run Keras' own BN ops when ``enabled`` is False.

    For comparisons: Keras' BN is bitwise what keras.applications computes, the fused kernel
    rounds differently (more accurately: Keras' ``x * inv + (beta - mean * inv)`` cancels
    when |mean| >> std).
    """
    global _fused_enabled
    previous, _fused_enabled = _fused_enabled, bool(enabled)
    try:
        yield
    finally:
        _fused_enabled = previous


def _snapshot(variable):
    """A copy of ``variable``'s current value (read now, not when the copy is used)."""
    return keras.ops.copy(variable.value)


@contextlib.contextmanager
def frozen_statistics():
    """Training-mode calls traced inside this block normalize with the batch's moments but leave
    the moving statistics as they are.

    Gradient checkpointing runs a block's forward pass a second time in the backward pass; that
    recomputation must not move the statistics a second time in the same step.
    """
    global _statistics_frozen
    previous, _statistics_frozen = _statistics_frozen, True
    try:
        yield
    finally:
        _statistics_frozen = previous


@keras.saving.register_keras_serializable(package="effnet_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    def add_weight(self, *args, name=None, **kwargs):
        if name in ("moving_mean", "moving_variance") and not args:
            return self._replica_local_statistic(name=name, **kwargs)
        return super().add_weight(*args, name=name, **kwargs)

    def _replica_local_statistic(self, *, name, shape=None, initializer=None, trainable=False, autocast=False,
                                 **unused):
        """A moving statistic kept per replica and averaged when read across replicas (TF's
        ON_READ + MEAN, as Keras 2's BatchNormalization did).

        Keras 3 creates it as an ordinary mirrored variable that each replica overwrites with its
        own batch's statistics, so replicas (and workers) drift apart and a checkpoint keeps one
        replica's values. Averaging at read time costs nothing per step; saving, evaluating
        outside ``strategy.run`` and exporting all read the mean over every replica.
        """
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(
                initializer=keras.initializers.get(initializer), shape=shape, dtype=self.variable_dtype,
                trainable=trainable, autocast=autocast, aggregation="mean", synchronization="on_read", name=name)
        variable.regularizer = None
        variable.constraint = None
        variable.overwrite_with_gradient = False
        self._track_variable(variable)
        return variable

    def _fusable(self, inputs):
        return (
            _fused_enabled
            and keras.backend.backend() == "tensorflow"
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.center
            and self.scale
            and self.compute_dtype in ("float32", "bfloat16", "float16")  # the kernel's types
        )

    def call(self, inputs, training=None, mask=None):
        if mask is not None or not self._fusable(inputs):
            if not (_statistics_frozen and training and self.trainable):
                return super().call(inputs, training=training, mask=mask)
            # Keras' code updates the statistics inside its call: put the old values back.
            saved = [_snapshot(self.moving_mean), _snapshot(self.moving_variance)]
            output = super().call(inputs, training=training, mask=mask)
            self.moving_mean.assign(saved[0])
            self.moving_variance.assign(saved[1])
            return output
        import tensorflow as tf

        batch_statistics = bool(training) and self.trainable  # Keras' rule, frozen BN included
        output, running_mean, running_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=tf.cast(inputs, self.compute_dtype),
            scale=tf.cast(self.gamma, "float32"),
            offset=tf.cast(self.beta, "float32"),
            mean=tf.cast(self.moving_mean, "float32"),
            variance=tf.cast(self.moving_variance, "float32"),
            epsilon=self.epsilon,
            # With this factor the training kernel returns the updated moving averages directly.
            exponential_avg_factor=1.0 - self.momentum if batch_statistics else 1.0,
            data_format="NHWC",
            is_training=batch_statistics,
        )
        if batch_statistics and not _statistics_frozen:
            self.moving_mean.assign(tf.cast(running_mean, self.moving_mean.dtype))
            self.moving_variance.assign(tf.cast(running_variance, self.moving_variance.dtype))
        return output
