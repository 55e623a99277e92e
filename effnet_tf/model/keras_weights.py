"""Importing ImageNet weights from keras.applications, by layer role (not by blind order).

Our layer names follow keras.applications' (``stem_conv``, ``block3b``, ``top_bn``,
``predictions``); inside a block the sub-layer names map to keras' flat names:
``block3b/expand_conv`` ← ``block3b_expand_conv``, ``block3b/se/reduce`` ← ``block3b_se_reduce``,
``block3b/dwconv`` ← ``block3b_dwconv`` (V1) or ``block3b_dwconv2`` (V2).

The input normalization is not imported: our models normalize with the constants of the
released weights (ImageNet mean/std, or (x-128)/128 for V2-S/M/L), which is what
keras.applications computes when it loads ``weights="imagenet"``.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple, Union

import keras

from effnet_tf.blocks.mbconv import FusedMBConv, MBConv

log = logging.getLogger(__name__)

# (our sub-layer path inside a block, keras suffix(es) tried in order)
_BLOCK_ROLES = (
    ("expand_conv", ("expand_conv",)),
    ("expand_bn", ("expand_bn",)),
    ("dwconv", ("dwconv", "dwconv2")),
    ("bn", ("bn",)),
    ("se/reduce", ("se_reduce",)),
    ("se/expand", ("se_expand",)),
    ("project_conv", ("project_conv",)),
    ("project_bn", ("project_bn",)),
)
_STEM_ROLES = ("stem_conv", "stem_bn")
_HEAD_ROLES = ("top_conv", "top_bn")
_IGNORED_SOURCE_LAYERS = ("normalization", "rescaling")  # preprocessing: constants on our side


def _sublayer(block: keras.layers.Layer, path: str) -> Optional[keras.layers.Layer]:
    layer = block
    for part in path.split("/"):
        layer = getattr(layer, part, None) if part != "se" else getattr(layer, "se", None)
        if layer is None:
            return None
    return layer


def _role_pairs(model: keras.Model) -> List[Tuple[str, keras.layers.Layer, Tuple[str, ...]]]:
    """(our path, our layer, candidate keras names) for every weighted layer, in network order."""
    pairs = [(name, model.get_layer(name), (name,)) for name in _STEM_ROLES]
    for layer in model.layers:
        if isinstance(layer, (MBConv, FusedMBConv)):
            for path, suffixes in _BLOCK_ROLES:
                sub = _sublayer(layer, path)
                if sub is not None:
                    pairs.append((f"{layer.name}/{path}", sub, tuple(f"{layer.name}_{s}" for s in suffixes)))
    pairs += [(name, model.get_layer(name), (name,)) for name in _HEAD_ROLES]
    return pairs


def _keras_constructor(model: keras.Model):
    variant = getattr(model, "variant", None)
    if variant is None or not variant.keras_application:
        have = "custom blocks" if variant is None else variant.name
        raise ValueError(
            f"keras.applications has no model for {have}; a weights file can only be read for "
            "efficientnet-b0..b7 and efficientnetv2-b0..b3/s/m/l. Pass a keras.applications model instead."
        )
    return getattr(keras.applications, variant.keras_application)


def _source_model_from_file(model: keras.Model, path: str) -> keras.Model:
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file {path!r} does not exist.")
    constructor = _keras_constructor(model)
    errors = []
    attempts = [dict(include_top=True, classes=1000), dict(include_top=False)]
    if model.include_top and model.num_classes != 1000:
        attempts.insert(0, dict(include_top=True, classes=model.num_classes))
    for kwargs in attempts:
        source = constructor(weights=None, **kwargs)
        try:
            source.load_weights(path)
            return source
        except Exception as error:  # noqa: BLE001 — try the next head layout, report all
            errors.append(f"{kwargs}: {error}")
    raise ValueError(f"Could not read {path!r} as weights of keras.applications.{constructor.__name__}: " + " | ".join(errors))


def load_keras_applications_weights(
    model: keras.Model,
    source: Union[keras.Model, str, os.PathLike],
    *,
    skip_mismatched_head: bool = False,
) -> Dict[str, int]:
    """Copies every weight of a keras.applications EfficientNet/EfficientNetV2 into ``model``.

    Args:
        model: an effnet_tf model of the same architecture (e.g. ``build_model("efficientnetv2-s")``).
        source: a keras.applications model, or a ``.h5`` / ``.weights.h5`` file saved from one.
        skip_mismatched_head: keep ``model``'s own classifier when the source's has another
            number of classes (fine-tuning). A source without a classifier never touches ours.

    Returns counts ``{"layers": copied, "head": 0 or 1}``. Raises ``ValueError`` naming the first
    layer whose weights do not fit, or a source layer with weights that nothing took.
    """
    if isinstance(source, (str, os.PathLike)):
        source = _source_model_from_file(model, os.fspath(source))
    by_name = {layer.name: layer for layer in source.layers}
    used = set()
    copied = 0
    for path, ours, candidates in _role_pairs(model):
        name = next((c for c in candidates if c in by_name), None)
        if name is None:
            raise ValueError(
                f"The source model has no layer {' or '.join(map(repr, candidates))} for our layer "
                f"{path!r}: it is not the same architecture as {model.name!r}."
            )
        _copy(path, ours, name, by_name[name])
        used.add(name)
        copied += 1

    head = 0
    if "predictions" in by_name:
        used.add("predictions")
        if getattr(model, "include_top", False) and _fits(model.get_layer("predictions"), by_name["predictions"]):
            _copy("predictions", model.get_layer("predictions"), "predictions", by_name["predictions"])
            head = 1
        elif getattr(model, "include_top", False) and not skip_mismatched_head:
            ours = [tuple(w.shape) for w in model.get_layer("predictions").weights]
            theirs = [tuple(w.shape) for w in by_name["predictions"].weights]
            raise ValueError(
                f"Layer 'predictions' does not match: ours has weight shapes {ours}, the source {theirs}. "
                "For fine-tuning on other classes pass skip_mismatched_head=True (or a source built "
                "with include_top=False)."
            )
        else:
            log.info("Kept this model's own classifier; the source's was not copied.")

    leftover = [
        layer.name for layer in source.layers
        if layer.weights and layer.name not in used
        and not layer.name.startswith(_IGNORED_SOURCE_LAYERS)
    ]
    if leftover:
        raise ValueError(
            f"The source model has weighted layers that match nothing in {model.name!r}, first "
            f"{leftover[0]!r} ({len(leftover)} in all): it is a deeper or different architecture."
        )
    return {"layers": copied, "head": head}


def _fits(ours: keras.layers.Layer, theirs: keras.layers.Layer) -> bool:
    return [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]


def _copy(path: str, ours: keras.layers.Layer, source_name: str, theirs: keras.layers.Layer) -> None:
    if not _fits(ours, theirs):
        ours_shapes = [tuple(w.shape) for w in ours.weights]
        theirs_shapes = [tuple(w.shape) for w in theirs.weights]
        raise ValueError(
            f"Layer {path!r} does not match source layer {source_name!r}: "
            f"weight shapes {ours_shapes} vs {theirs_shapes}."
        )
    ours.set_weights(theirs.get_weights())
