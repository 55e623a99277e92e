"""L2 weight decay on kernels, and the model's BatchNorm statistics.

The decay is a per-variable regularizer on kernels only (not BatchNorm, not biases), as the
official code's ``weight_decay * sum(l2_loss(kernels))``, scaled by ``1 / num_replicas``: Keras
adds regularization losses unscaled while the data loss is scaled per replica, so under N
replicas the summed gradients would apply N times the decay.
"""

from __future__ import annotations

from typing import List

import keras
import tensorflow as tf
from keras import ops

from effnet_tf import keras_internals

_PACKAGE = "effnet_tf"
KERNEL_NAMES = ("kernel", "depthwise_kernel")


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
    for layer in keras_internals.flatten_layers(model):
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
