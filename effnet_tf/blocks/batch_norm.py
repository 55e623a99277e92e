"""BatchNormalization that trains with TensorFlow's fused kernel.

Keras 3's BatchNormalization computes the batch moments and the normalization as separate
ops (and upcasts bfloat16 to float32 first). On the TensorFlow backend, training steps use
``FusedBatchNormV3`` instead: one kernel that computes moments, normalizes and updates the
moving statistics (oneDNN on CPU, cuDNN on GPU, and XLA lowers it on TPU). The weights (gamma,
beta, moving_mean, moving_variance) and inference are exactly Keras', so weight import and
parity are unchanged; it falls back to Keras' code on other backends, for synchronized
(cross-replica) BN and for anything but 4-D channels-last input.

One difference in training only: the fused kernel updates the moving variance with the
unbiased batch variance (n / (n - 1), n = batch·height·width), as Keras 2 and the official
TF code did; Keras 3 uses the biased one.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="effnet_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    def _fusable(self, inputs, training):
        return (
            training is True
            and keras.backend.backend() == "tensorflow"
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.center
            and self.scale
        )

    def call(self, inputs, training=None, mask=None):
        if mask is not None or not self._fusable(inputs, training):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        output, running_mean, running_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=tf.cast(self.gamma, "float32"),
            offset=tf.cast(self.beta, "float32"),
            mean=tf.cast(self.moving_mean, "float32"),
            variance=tf.cast(self.moving_variance, "float32"),
            epsilon=self.epsilon,
            # With this factor the kernel returns the updated moving averages directly.
            exponential_avg_factor=1.0 - self.momentum,
            data_format="NHWC",
            is_training=True,
        )
        self.moving_mean.assign(tf.cast(running_mean, self.moving_mean.dtype))
        self.moving_variance.assign(tf.cast(running_variance, self.moving_variance.dtype))
        return output
