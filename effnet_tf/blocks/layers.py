"""Keras layers EfficientNet's blocks are made of: squeeze-excite, stochastic depth, scheduled
dropout and input normalization (the blocks themselves are in ``effnet_tf.blocks.mbconv``).

Every layer is registered for serialization under the package name ``effnet_tf`` and has a
complete ``get_config``, so ``.keras`` files load with safe mode on and no ``custom_objects``.
The layers use ``keras.ops`` only (plus an optional ``tf.Variable`` for scheduled rates on the
TensorFlow backend), so they also run on Keras' JAX backend.

"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
from keras import ops


SERIALIZATION_PACKAGE = "effnet_tf"

# Initializers of the reference implementations (keras.applications and the official code).
CONV_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}
DENSE_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}

IMAGENET_MEAN_PIXELS = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)
IMAGENET_STD_PIXELS = (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0)


def check_rate(name: str, rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {rate!r}.")
    return rate


class _ScheduledRateMixin:
    """A drop rate that can change during training without retracing the train step.

    On the TensorFlow backend the live rate is a non-trainable ``tf.Variable`` created in
    ``build`` (so inside the distribution strategy's scope). It is deliberately not a Keras
    weight: it does not change ``count_params`` or the weight files, and the schedule (a pure
    function of the epoch) sets it again on resume. On other backends the Python float is used.
    """

    def _init_rate(self, rate: float) -> None:
        self.rate = check_rate(f"{type(self).__name__} rate", rate)
        self._rate_variable = None

    def _build_rate_variable(self) -> None:
        if keras.backend.backend() == "tensorflow" and self._rate_variable is None:
            import tensorflow as tf

            self._rate_variable = tf.Variable(
                self.rate, trainable=False, dtype="float32", name=f"{self.name}_rate"
            )

    def set_rate(self, rate: float) -> None:
        """Sets the drop rate used from the next training step on."""
        self.rate = check_rate(f"{type(self).__name__} rate", rate)
        if self._rate_variable is not None:
            self._rate_variable.assign(self.rate)

    def _current_rate(self):
        return self._rate_variable if self._rate_variable is not None else self.rate


class _ScheduledDrop(_ScheduledRateMixin, keras.layers.Layer):
    """Inverted dropout with a schedulable rate; subclasses choose the noise shape.

    Random numbers come from a ``SeedGenerator`` (stateless ops), so the layers compile under
    XLA and have no Python-side randomness. At inference they are the identity.
    """

    def __init__(self, rate: float = 0.0, seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self._init_rate(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self._build_rate_variable()
        super().build(input_shape)

    def _noise_shape(self, inputs):
        raise NotImplementedError

    def call(self, inputs, training=None):
        if not training:
            return inputs
        keep = 1.0 - ops.cast(self._current_rate(), "float32")
        noise = keras.random.uniform(self._noise_shape(inputs), dtype="float32", seed=self.seed_generator)
        mask = ops.floor(keep + noise) / keep  # 1/keep with probability keep, else 0
        return inputs * ops.cast(mask, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class StochasticDepth(_ScheduledDrop):
    """Drops the whole residual branch per sample with probability ``rate`` (training only).

    Kept samples are scaled by ``1 / (1 - rate)`` so the expectation is unchanged.
    """

    def _noise_shape(self, inputs):
        return (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class ScheduledDropout(_ScheduledDrop):
    """Element-wise dropout whose rate can change between progressive-learning stages."""

    def _noise_shape(self, inputs):
        return ops.shape(inputs)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class ImageNormalization(keras.layers.Layer):
    """``(pixels - mean) / std`` with per-channel constants in pixel units (0..255 input).

    Accepts any numeric input dtype (uint8 from the input pipeline is cast on the device) and
    computes in float32 by default: normalizing in bfloat16 would round the pixel values.
    The constants are config, not weights, so parameter counts match the references.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(
                f"ImageNormalization needs one positive std per mean; got mean={self.mean}, std={self.std}."
            )

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        inv_std = ops.convert_to_tensor([1.0 / s for s in self.std], dtype=self.compute_dtype)
        return (x - mean) * inv_std

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std})
        return config


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class SqueezeExcite(keras.layers.Layer):
    """Squeeze-and-excite: global average → 1×1 conv (bias) + act → 1×1 conv (bias) + sigmoid → scale."""

    def __init__(self, reduced_filters: int, activation: str = "silu", **kwargs):
        super().__init__(**kwargs)
        if int(reduced_filters) < 1:
            raise ValueError(f"SqueezeExcite reduced_filters must be >= 1, got {reduced_filters!r}.")
        self.reduced_filters = int(reduced_filters)
        self.activation = activation
        self.reduce = None
        self.expand = None

    def build(self, input_shape):
        filters = int(input_shape[-1])
        self.reduce = keras.layers.Conv2D(
            self.reduced_filters, 1, padding="same", activation=self.activation,
            kernel_initializer=CONV_KERNEL_INITIALIZER, name="reduce", dtype=self.dtype_policy,
        )
        self.expand = keras.layers.Conv2D(
            filters, 1, padding="same", activation="sigmoid",
            kernel_initializer=CONV_KERNEL_INITIALIZER, name="expand", dtype=self.dtype_policy,
        )
        self.reduce.build((None, 1, 1, filters))
        self.expand.build((None, 1, 1, self.reduced_filters))
        super().build(input_shape)

    def call(self, inputs):
        squeezed = ops.mean(inputs, axis=(1, 2), keepdims=True)
        return inputs * self.expand(self.reduce(squeezed))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"reduced_filters": self.reduced_filters, "activation": self.activation})
        return config
