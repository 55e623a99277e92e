"""The named variants: thin parameter sets over the block strings (keras.applications' style).

Figures are from the papers (Tan & Le, EfficientNet, arXiv:1905.11946; EfficientNetV2,
arXiv:2104.00298) and the official code (github.com/tensorflow/tpu, models/official/efficientnet
and efficientnet_v2: efficientnet_builder.py, effnetv2_configs.py, hparams), cross-checked
against keras.applications. Progressive-learning
ranges follow the V2 paper: image size from ``min_train_size`` to ``train_size``, RandAugment
magnitude, mixup alpha and dropout from their minimum to their maximum.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Dict, List, Optional, Tuple

V1_BASE_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)
V2_BASE_BLOCKS = (
    "r1_k3_s1_e1_i32_o16_c1",
    "r2_k3_s2_e4_i16_o32_c1",
    "r2_k3_s2_e4_i32_o48_c1",
    "r3_k3_s2_e4_i48_o96_se0.25",
    "r5_k3_s1_e6_i96_o112_se0.25",
    "r8_k3_s2_e6_i112_o192_se0.25",
)
V2_S_BLOCKS = (
    "r2_k3_s1_e1_i24_o24_c1",
    "r4_k3_s2_e4_i24_o48_c1",
    "r4_k3_s2_e4_i48_o64_c1",
    "r6_k3_s2_e4_i64_o128_se0.25",
    "r9_k3_s1_e6_i128_o160_se0.25",
    "r15_k3_s2_e6_i160_o256_se0.25",
)
V2_M_BLOCKS = (
    "r3_k3_s1_e1_i24_o24_c1",
    "r5_k3_s2_e4_i24_o48_c1",
    "r5_k3_s2_e4_i48_o80_c1",
    "r7_k3_s2_e4_i80_o160_se0.25",
    "r14_k3_s1_e6_i160_o176_se0.25",
    "r18_k3_s2_e6_i176_o304_se0.25",
    "r5_k3_s1_e6_i304_o512_se0.25",
)
V2_L_BLOCKS = (
    "r4_k3_s1_e1_i32_o32_c1",
    "r7_k3_s2_e4_i32_o64_c1",
    "r7_k3_s2_e4_i64_o96_c1",
    "r10_k3_s2_e4_i96_o192_se0.25",
    "r19_k3_s1_e6_i192_o224_se0.25",
    "r25_k3_s2_e6_i224_o384_se0.25",
    "r7_k3_s1_e6_i384_o640_se0.25",
)
V2_XL_BLOCKS = (
    "r4_k3_s1_e1_i32_o32_c1",
    "r8_k3_s2_e4_i32_o64_c1",
    "r8_k3_s2_e4_i64_o96_c1",
    "r16_k3_s2_e4_i96_o192_se0.25",
    "r24_k3_s1_e6_i192_o256_se0.25",
    "r32_k3_s2_e6_i256_o512_se0.25",
    "r8_k3_s1_e6_i512_o640_se0.25",
)

# The official Lite builder (models/official/efficientnet/lite): V1's blocks without
# squeeze-excite (poorly supported on edge accelerators), ReLU6, stem and head not scaled.
LITE_BLOCKS = tuple(block.replace("_se0.25", "") for block in V1_BASE_BLOCKS)
# The official EdgeTPU builder (models/official/efficientnet/edgetpu): Fused-MBConv first, ReLU,
# no squeeze-excite; a 32-channel stem feeds a first block declared with 24 inputs.
EDGETPU_BLOCKS = (
    "r1_k3_s1_e4_i24_o24_c1_noskip",
    "r2_k3_s2_e8_i24_o32_c1",
    "r4_k3_s2_e8_i32_o48_c1",
    "r5_k5_s2_e8_i48_o96",
    "r4_k5_s1_e8_i96_o144",
    "r2_k5_s2_e8_i144_o192",
)

# Input normalization of the released weights (pixel units, 0..255 input).
IMAGENET_NORMALIZATION = "imagenet"  # ImageNet mean/std: V1 and V2-B0..B3
SYMMETRIC_NORMALIZATION = "symmetric"  # (x - 128) / 128: V2-S/M/L/XL
EDGE_NORMALIZATION = "edge"  # (x - 127) / 128: Lite and EdgeTPU ("better post-quantization")
NORMALIZATIONS = (IMAGENET_NORMALIZATION, SYMMETRIC_NORMALIZATION, EDGE_NORMALIZATION)


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """Everything that distinguishes one named EfficientNet from another."""

    name: str
    family: str  # "v1" or "v2"
    blocks: Tuple[str, ...]
    width: float
    depth: float
    train_size: int
    eval_size: int
    dropout_rate: float
    randaug_magnitude: float  # maximum, reached at the last progressive stage
    mixup_alpha: float  # maximum
    normalization: str
    keras_application: Optional[str]  # constructor name in keras.applications, if it has one
    min_train_size: int = 128
    min_randaug_magnitude: float = 5.0
    min_dropout_rate: float = 0.1
    drop_connect_rate: float = 0.2
    activation: str = "silu"
    stem_filters: Optional[int] = None  # None: the first block's declared input
    fix_stem_head: bool = False

    @property
    def crop_area_min(self) -> float:
        """Lower bound of the random-resized crop's area: 0.05 in V2's recipe, 0.08 in V1's."""
        return 0.05 if self.family == "v2" else 0.08

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _v1(name, width, depth, resolution, dropout, keras_name):
    return VariantSpec(
        name=name, family="v1", blocks=V1_BASE_BLOCKS, width=width, depth=depth,
        train_size=resolution, eval_size=resolution, dropout_rate=dropout,
        randaug_magnitude=10.0, mixup_alpha=0.0, normalization=IMAGENET_NORMALIZATION,
        keras_application=keras_name,
    )


def _edge(name, blocks, width, depth, resolution, dropout, activation, stem_filters=None, fix_stem_head=False):
    return dataclasses.replace(
        _v1(name, width, depth, resolution, dropout, None), blocks=blocks, normalization=EDGE_NORMALIZATION,
        activation=activation, stem_filters=stem_filters, fix_stem_head=fix_stem_head)


def _v2(name, blocks, width, depth, train, evaluation, dropout, randaug, mixup, normalization, keras_name):
    return VariantSpec(
        name=name, family="v2", blocks=blocks, width=width, depth=depth, train_size=train,
        eval_size=evaluation, dropout_rate=dropout, randaug_magnitude=randaug, mixup_alpha=mixup,
        normalization=normalization, keras_application=keras_name,
    )


_IMNET, _SYM = IMAGENET_NORMALIZATION, SYMMETRIC_NORMALIZATION
_VARIANTS: Dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        _v1("efficientnet-b0", 1.0, 1.0, 224, 0.2, "EfficientNetB0"),
        _v1("efficientnet-b1", 1.0, 1.1, 240, 0.2, "EfficientNetB1"),
        _v1("efficientnet-b2", 1.1, 1.2, 260, 0.3, "EfficientNetB2"),
        _v1("efficientnet-b3", 1.2, 1.4, 300, 0.3, "EfficientNetB3"),
        _v1("efficientnet-b4", 1.4, 1.8, 380, 0.4, "EfficientNetB4"),
        _v1("efficientnet-b5", 1.6, 2.2, 456, 0.4, "EfficientNetB5"),
        _v1("efficientnet-b6", 1.8, 2.6, 528, 0.5, "EfficientNetB6"),
        _v1("efficientnet-b7", 2.0, 3.1, 600, 0.5, "EfficientNetB7"),
        _v1("efficientnet-b8", 2.2, 3.6, 672, 0.5, None),
        _v1("efficientnet-l2", 4.3, 5.3, 800, 0.5, None),
        _edge("efficientnet-lite0", LITE_BLOCKS, 1.0, 1.0, 224, 0.2, "relu6", fix_stem_head=True),
        _edge("efficientnet-lite1", LITE_BLOCKS, 1.0, 1.1, 240, 0.2, "relu6", fix_stem_head=True),
        _edge("efficientnet-lite2", LITE_BLOCKS, 1.1, 1.2, 260, 0.3, "relu6", fix_stem_head=True),
        _edge("efficientnet-lite3", LITE_BLOCKS, 1.2, 1.4, 280, 0.3, "relu6", fix_stem_head=True),
        _edge("efficientnet-lite4", LITE_BLOCKS, 1.4, 1.8, 300, 0.3, "relu6", fix_stem_head=True),
        _edge("efficientnet-edgetpu-s", EDGETPU_BLOCKS, 1.0, 1.0, 224, 0.2, "relu", stem_filters=32),
        _edge("efficientnet-edgetpu-m", EDGETPU_BLOCKS, 1.0, 1.1, 240, 0.2, "relu", stem_filters=32),
        _edge("efficientnet-edgetpu-l", EDGETPU_BLOCKS, 1.2, 1.4, 300, 0.3, "relu", stem_filters=32),
        # The official code trains V2-B0..B3 with AutoAugment; we use RandAugment rising 5 -> 10.
        _v2("efficientnetv2-b0", V2_BASE_BLOCKS, 1.0, 1.0, 192, 224, 0.2, 10.0, 0.0, _IMNET, "EfficientNetV2B0"),
        _v2("efficientnetv2-b1", V2_BASE_BLOCKS, 1.0, 1.1, 192, 240, 0.2, 10.0, 0.0, _IMNET, "EfficientNetV2B1"),
        _v2("efficientnetv2-b2", V2_BASE_BLOCKS, 1.1, 1.2, 208, 260, 0.3, 10.0, 0.0, _IMNET, "EfficientNetV2B2"),
        _v2("efficientnetv2-b3", V2_BASE_BLOCKS, 1.2, 1.4, 240, 300, 0.3, 10.0, 0.0, _IMNET, "EfficientNetV2B3"),
        _v2("efficientnetv2-s", V2_S_BLOCKS, 1.0, 1.0, 300, 384, 0.2, 10.0, 0.0, _SYM, "EfficientNetV2S"),
        _v2("efficientnetv2-m", V2_M_BLOCKS, 1.0, 1.0, 384, 480, 0.3, 15.0, 0.2, _SYM, "EfficientNetV2M"),
        _v2("efficientnetv2-l", V2_L_BLOCKS, 1.0, 1.0, 384, 480, 0.4, 20.0, 0.5, _SYM, "EfficientNetV2L"),
        _v2("efficientnetv2-xl", V2_XL_BLOCKS, 1.0, 1.0, 384, 512, 0.4, 20.0, 0.5, _SYM, None),
    )
}


def list_models() -> List[str]:
    """Names of every registered variant, V1 first."""
    return list(_VARIANTS)


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def get_variant(name: str) -> VariantSpec:
    """Looks a variant up by name; spelling such as ``EfficientNetV2B0`` or ``efficientnet_v2_s`` works.

    Raises ``ValueError`` listing the known names and the closest one.
    """
    if isinstance(name, VariantSpec):
        return name
    if name in _VARIANTS:
        return _VARIANTS[name]
    by_squashed = {_squash(n): n for n in _VARIANTS}
    if _squash(str(name)) in by_squashed:
        return _VARIANTS[by_squashed[_squash(str(name))]]
    close = difflib.get_close_matches(str(name).lower(), list(_VARIANTS), n=1, cutoff=0.0)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown model {name!r}.{hint} Known models: {', '.join(_VARIANTS)}.")


#: The training figures of a variant that a config's null fields fall back to (``recipe``).
RECIPE_FIELDS = ("width", "depth", "train_size", "eval_size", "dropout_rate", "drop_connect_rate",
                 "randaug_magnitude", "mixup_alpha", "min_train_size", "min_randaug_magnitude",
                 "min_dropout_rate", "crop_area_min")
#: Custom block strings train with V2-B0's recipe at 224 px, evaluated at the train size.
CUSTOM_RECIPE_BASE = "efficientnetv2-b0"
_CUSTOM_RECIPE_CHANGES = {"width": 1.0, "depth": 1.0, "train_size": 224, "eval_size": None}


def recipe(name: Optional[str]) -> Dict[str, Any]:
    """``{field: value}`` of ``RECIPE_FIELDS`` for variant ``name`` (None: custom block strings).

    The one table the config's defaults come from: the variant registry above.
    """
    spec = get_variant(CUSTOM_RECIPE_BASE if name is None else name)
    values = {field: getattr(spec, field) for field in RECIPE_FIELDS}
    if name is None:
        values.update(_CUSTOM_RECIPE_CHANGES)
    return values
