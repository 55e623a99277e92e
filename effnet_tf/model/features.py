"""Multi-scale features for detection and segmentation backbones."""

from __future__ import annotations

from typing import Iterable, Optional

import keras

STRIDES = (2, 4, 8, 16, 32)


def feature_extractor(model: keras.Model, strides: Optional[Iterable[int]] = None) -> keras.Model:
    """A model sharing ``model``'s weights that returns ``{"stride_2": ..., ..., "stride_32": ...}``.

    Each entry is the output of the last layer working at that stride (the stem for stride 2,
    otherwise the last block of that resolution), as timm's ``features_only`` does.
    """
    endpoints = getattr(model, "endpoint_layer_names", None)
    if not endpoints:
        raise ValueError("feature_extractor needs an effnet_tf EfficientNet model (it records its endpoints).")
    strides = tuple(STRIDES if strides is None else strides)
    missing = [s for s in strides if s not in endpoints]
    if missing:
        raise ValueError(f"Strides {missing} are not in this model; it has {sorted(endpoints)}.")
    outputs = {f"stride_{s}": model.get_layer(endpoints[s]).output for s in strides}
    return keras.Model(model.input, outputs, name=f"{model.name}_features")
