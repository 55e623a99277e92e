"""The EfficientNet model: one builder for V1, V2 and custom block strings.

``EfficientNet`` is a functional Keras model subclass (keras-hub's pattern): its constructor
arguments are its config, so ``get_config`` is plain data and ``.keras`` files rebuild the same
graph. Layer names are stable and grep-able, and match keras.applications' block names
(``stem_conv``, ``block3b``, ``top_bn``, ``predictions``), which is how weights import by role.
"""

from __future__ import annotations

import string
from typing import Dict, List, Optional, Sequence, Tuple, Union

import keras

from effnet_tf.blocks.batch_norm import FusedBatchNormalization
from effnet_tf.blocks.block_string import decode_all, encode_all
from effnet_tf.blocks.layers import (
    CONV_KERNEL_INITIALIZER,
    DENSE_KERNEL_INITIALIZER,
    IMAGENET_MEAN_PIXELS,
    IMAGENET_STD_PIXELS,
    ImageNormalization,
    ScheduledDropout,
    check_rate,
)
from effnet_tf.blocks.mbconv import BLOCK_TYPES
from effnet_tf.model.scaling import expand_stages, fed_by_stem, round_filters, scale_stages
from effnet_tf.model.variants import (
    EDGE_NORMALIZATION,
    IMAGENET_NORMALIZATION,
    NORMALIZATIONS,
    SYMMETRIC_NORMALIZATION,
    VariantSpec,
    get_variant,
)

FAMILIES = ("v1", "v2")
POOLINGS = (None, "avg", "max")
# BatchNorm momentum in Keras' meaning (moving = momentum * moving + (1 - momentum) * batch).
BN_MOMENTUM = {"v1": 0.99, "v2": 0.9}
HEAD_FILTERS = 1280


def _block_suffix(index: int) -> str:
    """a, b, ..., z, aa, ab, ...: keras.applications' letters, extended past 26 repeats (V2-XL)."""
    letters = string.ascii_lowercase
    suffix = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        suffix = letters[rem] + suffix
    return suffix


def _normalization_constants(normalization: str) -> Tuple[Sequence[float], Sequence[float]]:
    if normalization == IMAGENET_NORMALIZATION:
        return IMAGENET_MEAN_PIXELS, IMAGENET_STD_PIXELS
    if normalization == SYMMETRIC_NORMALIZATION:
        return (128.0, 128.0, 128.0), (128.0, 128.0, 128.0)
    if normalization == EDGE_NORMALIZATION:
        return (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")


@keras.saving.register_keras_serializable(package="effnet_tf")
class EfficientNet(keras.Model):
    """An EfficientNet (V1 or V2) or a custom architecture from block strings.

    Args:
        blocks: block strings, one per stage (see ``effnet_tf.blocks.block_string``).
        width, depth: compound-scaling coefficients.
        family: ``"v1"`` (10% rounding guard, BN momentum 0.99) or ``"v2"`` (no guard, 0.9).
        num_classes, include_top, pooling, classifier_activation: as in keras.applications.
            ``classifier_activation=None`` gives logits.
        dropout_rate: head dropout before the classifier.
        drop_connect_rate: stochastic-depth rate of the last block; block j of N gets
            ``drop_connect_rate * j / N``.
        include_preprocessing: normalize 0..255 pixels inside the model (any numeric dtype).
        normalization: ``"imagenet"`` (mean/std), ``"symmetric"`` ((x-128)/128) or ``"edge"``
            ((x-127)/128, the official Lite and EdgeTPU models').
        activation: ``"silu"`` (V1, V2), ``"relu6"`` (Lite), ``"relu"`` (EdgeTPU), or any Keras name.
        stem_filters: the stem's channels before width scaling (default: the first block's
            declared input; EdgeTPU: 32 for a first block declared ``i24``).
        fix_stem_head: keep the stem, the 1280-channel head and the first and last stage's
            repeats unscaled (the official Lite models).
        input_shape: default ``(None, None, 3)``, so one model trains at every image size.
        bn_momentum, bn_epsilon: BatchNorm settings (defaults per family).
        batchnorm_synchronized: cross-replica BatchNorm under a distribution strategy.
        gradient_checkpointing: recompute each block's activations in the backward pass of
            training (less memory for more compute; see ``effnet_tf.blocks.recompute``).
        variant: name of the registered variant this model was built from, if any.
    """

    def __init__(
        self,
        blocks: Sequence[str],
        width: float = 1.0,
        depth: float = 1.0,
        family: str = "v2",
        num_classes: int = 1000,
        include_top: bool = True,
        pooling: Optional[str] = None,
        classifier_activation: Optional[str] = "softmax",
        dropout_rate: float = 0.2,
        drop_connect_rate: float = 0.2,
        include_preprocessing: bool = True,
        normalization: str = IMAGENET_NORMALIZATION,
        input_shape: Sequence[Optional[int]] = (None, None, 3),
        bn_momentum: Optional[float] = None,
        bn_epsilon: float = 1e-3,
        activation: str = "silu",
        stem_filters: Optional[int] = None,
        fix_stem_head: bool = False,
        batchnorm_synchronized: bool = False,
        gradient_checkpointing: bool = False,
        variant: Optional[str] = None,
        name: Optional[str] = None,
        **kwargs,
    ):
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}.")
        if width <= 0 or depth <= 0:
            raise ValueError(f"width and depth must be > 0, got width={width!r}, depth={depth!r}.")
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}.")
        dropout_rate = check_rate("dropout_rate", dropout_rate)
        drop_connect_rate = check_rate("drop_connect_rate", drop_connect_rate)
        stages = decode_all(blocks)
        v1_guard = family == "v1"
        momentum = BN_MOMENTUM[family] if bn_momentum is None else float(bn_momentum)
        bn_kwargs = dict(momentum=momentum, epsilon=bn_epsilon, synchronized=batchnorm_synchronized)

        inputs = keras.Input(shape=input_shape, name="image")
        x = inputs
        if include_preprocessing:
            mean, std = _normalization_constants(normalization)
            x = ImageNormalization(mean, std, name="normalization")(x)

        scaled = scale_stages(stages, width, depth, v1_guard, fix_first_last_repeats=fix_stem_head)
        stem_base = int(stem_filters) if stem_filters else stages[0].input_filters
        stem_out = stem_base if fix_stem_head else round_filters(stem_base, width, v1_guard)
        x = keras.layers.Conv2D(
            stem_out, 3, strides=2, padding="same", use_bias=False,
            kernel_initializer=CONV_KERNEL_INITIALIZER, name="stem_conv",
        )(x)
        x = FusedBatchNormalization(name="stem_bn", **bn_kwargs)(x)
        x = keras.layers.Activation(activation, name="stem_activation")(x)

        # Multi-scale endpoints: the last layer output at each stride (2, 4, 8, 16, 32).
        stride = 2
        endpoints: Dict[int, str] = {stride: "stem_activation"}
        per_stage = expand_stages(scaled)
        per_stage[0][0] = fed_by_stem(per_stage[0][0], stem_out)
        total_blocks = sum(len(stage) for stage in per_stage)
        block_names: List[str] = []
        index = 0
        for stage_index, stage_blocks in enumerate(per_stage):
            for repeat, args in enumerate(stage_blocks):
                block_name = f"block{stage_index + 1}{_block_suffix(repeat)}"
                block_cls = BLOCK_TYPES[args.fused]
                x = block_cls(
                    input_filters=args.input_filters,
                    output_filters=args.output_filters,
                    kernel_size=args.kernel_size,
                    stride=args.stride,
                    expand_ratio=args.expand_ratio,
                    se_ratio=args.se_ratio,
                    skip=args.skip,
                    drop_connect_rate=drop_connect_rate * index / total_blocks,
                    bn_momentum=momentum,
                    bn_epsilon=bn_epsilon,
                    activation=activation,
                    batchnorm_synchronized=batchnorm_synchronized,
                    gradient_checkpointing=gradient_checkpointing,
                    name=block_name,
                )(x)
                stride *= args.stride
                endpoints[stride] = block_name
                block_names.append(block_name)
                index += 1

        head_filters = HEAD_FILTERS if fix_stem_head else round_filters(HEAD_FILTERS, width, v1_guard)
        x = keras.layers.Conv2D(
            head_filters, 1, padding="same", use_bias=False,
            kernel_initializer=CONV_KERNEL_INITIALIZER, name="top_conv",
        )(x)
        x = FusedBatchNormalization(name="top_bn", **bn_kwargs)(x)
        x = keras.layers.Activation(activation, name="top_activation")(x)

        if include_top:
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
            x = ScheduledDropout(dropout_rate, name="top_dropout")(x)
            # float32 head: a softmax/logits in bfloat16 loses the small probabilities.
            x = keras.layers.Dense(
                num_classes, activation=classifier_activation,
                kernel_initializer=DENSE_KERNEL_INITIALIZER, name="predictions", dtype="float32",
            )(x)
        elif pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)

        super().__init__(inputs=inputs, outputs=x, name=name or variant or "efficientnet", **kwargs)

        self.blocks_strings = encode_all(stages)
        self.width = float(width)
        self.depth = float(depth)
        self.family = family
        self.num_classes = num_classes
        self.include_top = bool(include_top)
        self.pooling = pooling
        self.classifier_activation = classifier_activation
        self.dropout_rate = dropout_rate
        self.drop_connect_rate = drop_connect_rate
        self.include_preprocessing = bool(include_preprocessing)
        self.normalization = normalization
        self.image_input_shape = input_shape
        self.bn_momentum = momentum
        self.bn_epsilon = float(bn_epsilon)
        self.activation = activation
        self.stem_filters = int(stem_filters) if stem_filters else None
        self.fix_stem_head = bool(fix_stem_head)
        self.batchnorm_synchronized = bool(batchnorm_synchronized)
        self.variant_name = variant
        self.block_names = tuple(block_names)
        self.endpoint_layer_names = dict(endpoints)

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether the blocks recompute their activations in the backward pass. Settable (e.g.
        on a loaded model); takes effect when the train step is next traced (``compile``)."""
        return all(self.get_layer(name).gradient_checkpointing for name in self.block_names)

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enabled: bool) -> None:
        for name in self.block_names:
            self.get_layer(name).gradient_checkpointing = bool(enabled)

    @property
    def variant(self) -> Optional[VariantSpec]:
        """The registered variant this model was built from (None for custom block strings)."""
        return get_variant(self.variant_name) if self.variant_name else None

    def get_config(self):
        return {
            "blocks": list(self.blocks_strings),
            "width": self.width,
            "depth": self.depth,
            "family": self.family,
            "num_classes": self.num_classes,
            "include_top": self.include_top,
            "pooling": self.pooling,
            "classifier_activation": self.classifier_activation,
            "dropout_rate": self.dropout_rate,
            "drop_connect_rate": self.drop_connect_rate,
            "include_preprocessing": self.include_preprocessing,
            "normalization": self.normalization,
            "input_shape": list(self.image_input_shape),
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
            "activation": self.activation,
            "stem_filters": self.stem_filters,
            "fix_stem_head": self.fix_stem_head,
            "batchnorm_synchronized": self.batchnorm_synchronized,
            "gradient_checkpointing": self.gradient_checkpointing,
            "variant": self.variant_name,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        trainable = config.pop("trainable", True)
        model = cls(**config)
        model.trainable = trainable
        return model


_OVERRIDABLE = (
    "width", "depth", "family", "include_top", "pooling", "classifier_activation", "dropout_rate",
    "drop_connect_rate", "include_preprocessing", "normalization", "input_shape", "bn_momentum",
    "bn_epsilon", "activation", "stem_filters", "fix_stem_head", "batchnorm_synchronized",
    "gradient_checkpointing", "name",
)


def build_model(
    name: Union[str, VariantSpec, None] = None,
    num_classes: int = 1000,
    *,
    blocks: Optional[Sequence[str]] = None,
    **overrides,
) -> EfficientNet:
    """Builds a named variant, or a custom architecture from block strings.

    ``build_model("efficientnetv2-s", num_classes=10, dropout_rate=0.3)`` or
    ``build_model(blocks=["r1_k3_s1_e1_i32_o16_c1", ...], width=0.5, depth=0.5)``.
    Overrides: width, depth, dropout_rate, drop_connect_rate, include_top, pooling,
    classifier_activation, include_preprocessing, normalization, input_shape, bn_momentum,
    bn_epsilon, activation, batchnorm_synchronized, gradient_checkpointing, family, name.
    ``None`` values mean "default".
    """
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise TypeError(f"Unknown build_model argument(s) {unknown}; allowed: {', '.join(_OVERRIDABLE)}.")
    overrides = {k: v for k, v in overrides.items() if v is not None or k in ("pooling", "classifier_activation")}
    if name is None and blocks is None:
        raise ValueError("build_model needs a variant name (see effnet_tf.list_models()) or blocks=[...].")
    if name is not None:
        spec = get_variant(name)
        arguments = dict(
            blocks=list(blocks) if blocks is not None else list(spec.blocks),
            width=spec.width, depth=spec.depth, family=spec.family,
            dropout_rate=spec.dropout_rate, drop_connect_rate=spec.drop_connect_rate,
            normalization=spec.normalization, activation=spec.activation,
            stem_filters=spec.stem_filters, fix_stem_head=spec.fix_stem_head,
            variant=spec.name if blocks is None else None,
        )
    else:
        if isinstance(blocks, str):
            blocks = [b for b in blocks.split(",") if b.strip()]
        arguments = dict(blocks=list(blocks), family="v2")
    arguments.update(overrides)
    # ``variant`` stays recorded under width/depth overrides: its eval size and input
    # normalization still describe the model (config rebuilds from the explicit values).
    return EfficientNet(num_classes=num_classes, **arguments)
