"""Keras layers of EfficientNet: the blocks and the pieces they are made of.

Every layer is registered for serialization under the package name ``effnet_tf`` and has a
complete ``get_config``, so ``.keras`` files load with safe mode on and no ``custom_objects``.
The layers use ``keras.ops`` only (plus an optional ``tf.Variable`` for scheduled rates on the
TensorFlow backend), so they also run on Keras' JAX backend.

Sub-layer names inside the blocks (``expand_conv``, ``dwconv``, ``se/reduce``, ``project_bn``...)
are stable: they are how weights are imported from keras.applications by role.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
from keras import ops

from effnet_tf.blocks.batch_norm import FusedBatchNormalization

_PACKAGE = "effnet_tf"

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


def _check_rate(name: str, rate: float) -> float:
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
        self.rate = _check_rate(f"{type(self).__name__} rate", rate)
        self._rate_variable = None

    def _build_rate_variable(self) -> None:
        if keras.backend.backend() == "tensorflow" and self._rate_variable is None:
            import tensorflow as tf

            self._rate_variable = tf.Variable(
                self.rate, trainable=False, dtype="float32", name=f"{self.name}_rate"
            )

    def set_rate(self, rate: float) -> None:
        """Sets the drop rate used from the next training step on."""
        self.rate = _check_rate(f"{type(self).__name__} rate", rate)
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


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StochasticDepth(_ScheduledDrop):
    """Drops the whole residual branch per sample with probability ``rate`` (training only).

    Kept samples are scaled by ``1 / (1 - rate)`` so the expectation is unchanged.
    """

    def _noise_shape(self, inputs):
        return (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ScheduledDropout(_ScheduledDrop):
    """Element-wise dropout whose rate can change between progressive-learning stages."""

    def _noise_shape(self, inputs):
        return ops.shape(inputs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
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


@keras.saving.register_keras_serializable(package=_PACKAGE)
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


class _BlockBase(keras.layers.Layer):
    """What MBConv and FusedMBConv share: arguments, BN factory, residual and config.

    Both blocks have the same signature (timm's rule: uniform block signatures), so the
    builder picks the class from the block string's ``c`` key and passes the same arguments.
    """

    def __init__(
        self,
        input_filters: int,
        output_filters: int,
        kernel_size: int = 3,
        stride: int = 1,
        expand_ratio: float = 1.0,
        se_ratio: Optional[float] = None,
        skip: bool = True,
        drop_connect_rate: float = 0.0,
        bn_momentum: float = 0.99,
        bn_epsilon: float = 1e-3,
        activation: str = "silu",
        batchnorm_synchronized: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if stride not in (1, 2):
            raise ValueError(f"{type(self).__name__} stride must be 1 or 2, got {stride!r}.")
        if expand_ratio <= 0:
            raise ValueError(f"{type(self).__name__} expand_ratio must be > 0, got {expand_ratio!r}.")
        self.input_filters = int(input_filters)
        self.output_filters = int(output_filters)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.expand_ratio = float(expand_ratio)
        self.se_ratio = float(se_ratio) if se_ratio else None
        self.skip = bool(skip)
        self.drop_connect_rate = _check_rate("drop_connect_rate", drop_connect_rate)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.activation = activation
        self.batchnorm_synchronized = bool(batchnorm_synchronized)
        self.expanded_filters = int(round(self.input_filters * self.expand_ratio))
        self.has_residual = self.skip and self.stride == 1 and self.input_filters == self.output_filters
        self.stochastic_depth = (
            StochasticDepth(self.drop_connect_rate, name="drop", dtype=self.dtype_policy)
            if self.has_residual else None
        )

    def _conv(self, filters, kernel_size, stride, name):
        return keras.layers.Conv2D(
            filters, kernel_size, strides=stride, padding="same", use_bias=False,
            kernel_initializer=CONV_KERNEL_INITIALIZER, name=name, dtype=self.dtype_policy,
        )

    def _bn(self, name):
        return FusedBatchNormalization(
            momentum=self.bn_momentum, epsilon=self.bn_epsilon, name=name,
            synchronized=self.batchnorm_synchronized, dtype=self.dtype_policy,
        )

    def _act(self, name):
        return keras.layers.Activation(self.activation, name=name, dtype=self.dtype_policy)

    def _squeeze_excite(self):
        if not self.se_ratio:
            return None
        reduced = max(1, int(self.input_filters * self.se_ratio))
        return SqueezeExcite(reduced, activation=self.activation, name="se", dtype=self.dtype_policy)

    def _add_residual(self, inputs, x, training):
        if not self.has_residual:
            return x
        return inputs + self.stochastic_depth(x, training=training)

    def set_drop_connect_rate(self, rate: float) -> None:
        """Sets this block's stochastic-depth rate (a no-op for blocks without a residual)."""
        self.drop_connect_rate = _check_rate("drop_connect_rate", rate)
        if self.stochastic_depth is not None:
            self.stochastic_depth.set_rate(rate)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape

        def out(size):
            return None if size is None else -(-size // self.stride)

        return (batch, out(height), out(width), self.output_filters)

    def get_config(self):
        config = super().get_config()
        config.update({
            "input_filters": self.input_filters,
            "output_filters": self.output_filters,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "expand_ratio": self.expand_ratio,
            "se_ratio": self.se_ratio,
            "skip": self.skip,
            "drop_connect_rate": self.drop_connect_rate,
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
            "activation": self.activation,
            "batchnorm_synchronized": self.batchnorm_synchronized,
        })
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MBConv(_BlockBase):
    """Mobile inverted bottleneck: [1×1 expand] → k×k depthwise → [SE] → 1×1 project → [residual]."""

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels != self.input_filters:
            raise ValueError(
                f"{self.name}: input has {channels} channels, the block expects {self.input_filters}."
            )
        self.expand_conv = self.expand_bn = self.expand_act = None
        if self.expand_ratio != 1:
            self.expand_conv = self._conv(self.expanded_filters, 1, 1, "expand_conv")
            self.expand_bn = self._bn("expand_bn")
            self.expand_act = self._act("expand_activation")
        self.dwconv = keras.layers.DepthwiseConv2D(
            self.kernel_size, strides=self.stride, padding="same", use_bias=False,
            depthwise_initializer=CONV_KERNEL_INITIALIZER, name="dwconv", dtype=self.dtype_policy,
        )
        self.bn = self._bn("bn")
        self.act = self._act("activation")
        self.se = self._squeeze_excite()
        self.project_conv = self._conv(self.output_filters, 1, 1, "project_conv")
        self.project_bn = self._bn("project_bn")

        height, width = input_shape[1], input_shape[2]
        expanded = (None, height, width, self.expanded_filters)
        if self.expand_conv is not None:
            self.expand_conv.build(input_shape)
            self.expand_bn.build(expanded)
        self.dwconv.build(expanded)
        strided = self.compute_output_shape(input_shape)[:3] + (self.expanded_filters,)
        self.bn.build(strided)
        if self.se is not None:
            self.se.build(strided)
        self.project_conv.build(strided)
        self.project_bn.build(strided[:3] + (self.output_filters,))
        if self.stochastic_depth is not None:
            self.stochastic_depth.build(strided[:3] + (self.output_filters,))
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = inputs
        if self.expand_conv is not None:
            x = self.expand_act(self.expand_bn(self.expand_conv(x), training=training))
        x = self.act(self.bn(self.dwconv(x), training=training))
        if self.se is not None:
            x = self.se(x)
        x = self.project_bn(self.project_conv(x), training=training)
        return self._add_residual(inputs, x, training)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FusedMBConv(_BlockBase):
    """Fused-MBConv: k×k conv (stride) + BN + act → [SE] → 1×1 project + BN → [residual].

    With ``expand_ratio == 1`` it is a single k×k conv (stride) + BN + act, as in the reference.
    """

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels != self.input_filters:
            raise ValueError(
                f"{self.name}: input has {channels} channels, the block expects {self.input_filters}."
            )
        fused_single = self.expand_ratio == 1
        self.expand_conv = self.expand_bn = self.expand_act = None
        if not fused_single:
            self.expand_conv = self._conv(self.expanded_filters, self.kernel_size, self.stride, "expand_conv")
            self.expand_bn = self._bn("expand_bn")
            self.expand_act = self._act("expand_activation")
        self.se = self._squeeze_excite()
        if fused_single:
            self.project_conv = self._conv(self.output_filters, self.kernel_size, self.stride, "project_conv")
            self.project_act = self._act("project_activation")
        else:
            self.project_conv = self._conv(self.output_filters, 1, 1, "project_conv")
            self.project_act = None
        self.project_bn = self._bn("project_bn")

        out_shape = self.compute_output_shape(input_shape)
        if fused_single:
            mid = tuple(input_shape)
        else:
            self.expand_conv.build(input_shape)
            mid = out_shape[:3] + (self.expanded_filters,)
            self.expand_bn.build(mid)
        if self.se is not None:
            self.se.build(mid)
        self.project_conv.build(mid)
        self.project_bn.build(out_shape)
        if self.stochastic_depth is not None:
            self.stochastic_depth.build(out_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = inputs
        if self.expand_conv is not None:
            x = self.expand_act(self.expand_bn(self.expand_conv(x), training=training))
        if self.se is not None:
            x = self.se(x)
        x = self.project_bn(self.project_conv(x), training=training)
        if self.project_act is not None:
            x = self.project_act(x)
        return self._add_residual(inputs, x, training)


BLOCK_TYPES = {False: MBConv, True: FusedMBConv}
