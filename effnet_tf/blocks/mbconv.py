"""MBConv and Fused-MBConv: EfficientNet's two blocks, with one signature.

Sub-layer names inside the blocks (``expand_conv``, ``dwconv``, ``se/reduce``, ``project_bn``...)
are stable: they are how weights are imported from keras.applications by role.
"""

from __future__ import annotations

from typing import Optional

import keras

from effnet_tf.blocks.batch_norm import FusedBatchNormalization
from effnet_tf.blocks.layers import SERIALIZATION_PACKAGE, CONV_KERNEL_INITIALIZER, SqueezeExcite, StochasticDepth, check_rate
from effnet_tf.blocks.recompute import recompute_grad


class _BlockBase(keras.layers.Layer):
    """What MBConv and FusedMBConv share: arguments, BN factory, residual and config.

    Both blocks have the same signature (timm's rule: uniform block signatures), so the
    builder picks the class from the block string's ``c`` key and passes the same arguments.
    Each defines ``_body`` (everything up to the residual); ``call`` adds the residual, and with
    ``gradient_checkpointing`` recomputes the body's activations in the backward pass of training.
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
        gradient_checkpointing: bool = False,
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
        self.drop_connect_rate = check_rate("drop_connect_rate", drop_connect_rate)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.activation = activation
        self.batchnorm_synchronized = bool(batchnorm_synchronized)
        self.gradient_checkpointing = bool(gradient_checkpointing)
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

    def _body(self, inputs, training):
        raise NotImplementedError

    def call(self, inputs, training=None):
        if training and self.gradient_checkpointing:
            x = recompute_grad(lambda block_input: self._body(block_input, True))(inputs)
        else:
            x = self._body(inputs, training)
        if not self.has_residual:
            return x
        return inputs + self.stochastic_depth(x, training=training)

    def set_drop_connect_rate(self, rate: float) -> None:
        """Sets this block's stochastic-depth rate (a no-op for blocks without a residual)."""
        self.drop_connect_rate = check_rate("drop_connect_rate", rate)
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
            "gradient_checkpointing": self.gradient_checkpointing,
        })
        return config


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
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

    def _body(self, inputs, training):
        x = inputs
        if self.expand_conv is not None:
            x = self.expand_act(self.expand_bn(self.expand_conv(x), training=training))
        x = self.act(self.bn(self.dwconv(x), training=training))
        if self.se is not None:
            x = self.se(x)
        return self.project_bn(self.project_conv(x), training=training)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
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

    def _body(self, inputs, training):
        x = inputs
        if self.expand_conv is not None:
            x = self.expand_act(self.expand_bn(self.expand_conv(x), training=training))
        if self.se is not None:
            x = self.se(x)
        x = self.project_bn(self.project_conv(x), training=training)
        if self.project_act is not None:
            x = self.project_act(x)
        return x


BLOCK_TYPES = {False: MBConv, True: FusedMBConv}
