"""Transfer learning: initial weights from another effnet_tf model, and which parts of a model train.

The fine-tuning recipe of Keras' transfer-learning guide, in three calls:

* ``freeze_batchnorm(model)``: BatchNorm layers stop learning; Keras runs a non-trainable
  BatchNorm in inference mode (its moving statistics normalize, and are not updated), which keeps
  a pretrained network's statistics intact on a small dataset.
* ``set_trainable_parts(model, head_only=True)``: only the classifier trains (the new head first).
* ``set_trainable_parts(model, trainable_blocks=N)``: then the last N blocks (and the top conv)
  train too; ``None`` unfreezes the whole network. Frozen BatchNorm layers stay frozen.

Layer names are the stable ones of ``build_model`` (``stem_conv``, ``block3b``, ``top_conv``,
``predictions``).
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import keras

from effnet_tf import keras_internals
from effnet_tf.blocks.mbconv import FusedMBConv, MBConv

HEAD_LAYERS = ("predictions",)
TOP_LAYERS = ("top_conv", "top_bn")


def blocks_of(model: keras.Model) -> List[keras.layers.Layer]:
    """The MBConv / Fused-MBConv blocks of ``model``, in network order."""
    return [layer for layer in model.layers if isinstance(layer, (MBConv, FusedMBConv))]


def _batchnorms(layer: keras.layers.Layer) -> List[keras.layers.Layer]:
    return [sub for sub in keras_internals.flatten_layers(layer, include_self=True)
            if isinstance(sub, keras.layers.BatchNormalization)]


def freeze_batchnorm(model: keras.Model) -> int:
    """Makes every BatchNorm layer of ``model`` non-trainable (inference mode); returns how many."""
    layers = _batchnorms(model)
    for layer in layers:
        layer.trainable = False
    model._effnet_frozen_batchnorm = True
    return len(layers)


def set_trainable_parts(model: keras.Model, *, head_only: bool = False,
                        trainable_blocks: Optional[int] = None) -> Dict[str, int]:
    """Sets which layers train: the head alone (``head_only``), or the last ``trainable_blocks``
    blocks plus the top conv and the head (``None``: every layer). BatchNorm layers frozen by
    ``freeze_batchnorm`` stay frozen. Returns ``{"trainable_weights", "frozen_weights"}`` counts.

    Call it before ``fit`` (a compiled train function traced for other trainable weights must be
    traced again: the driver keys its programs by phase).
    """
    blocks = blocks_of(model)
    if trainable_blocks is not None and not 0 <= int(trainable_blocks) <= len(blocks):
        raise ValueError(f"trainable_blocks={trainable_blocks!r} must be in [0, {len(blocks)}] "
                         f"(the model has {len(blocks)} blocks) or None (the whole network).")
    if head_only:
        train_names = set(HEAD_LAYERS)
    elif trainable_blocks is None:
        train_names = {layer.name for layer in model.layers}
    else:
        last = blocks[len(blocks) - int(trainable_blocks):] if trainable_blocks else []
        train_names = set(HEAD_LAYERS) | set(TOP_LAYERS) | {block.name for block in last}
    for layer in model.layers:
        layer.trainable = layer.name in train_names
    if getattr(model, "_effnet_frozen_batchnorm", False):
        for layer in _batchnorms(model):
            layer.trainable = False
    return {"trainable_weights": len(model.trainable_weights),
            "frozen_weights": len(model.non_trainable_weights)}


def copy_weights_by_name(model: keras.Model, source: keras.Model, skip_mismatched_head: bool = True) -> Dict[str, int]:
    """Copies every weighted layer of ``source`` into the same-named layer of ``model`` (two
    effnet_tf models of one architecture); a classifier of another size is left as it is when
    ``skip_mismatched_head``. Raises ``ValueError`` naming the first layer that does not fit."""
    theirs = {layer.name: layer for layer in source.layers}
    copied, head = 0, 0
    for layer in model.layers:
        if not layer.weights:
            continue
        other = theirs.get(layer.name)
        if other is None:
            raise ValueError(f"The source model has no layer {layer.name!r}: it is not the architecture of "
                             f"{model.name!r}.")
        ours_shapes = [tuple(w.shape) for w in layer.weights]
        their_shapes = [tuple(w.shape) for w in other.weights]
        if ours_shapes != their_shapes:
            if layer.name in HEAD_LAYERS and skip_mismatched_head:
                continue
            raise ValueError(f"Layer {layer.name!r} does not match the source: weight shapes {ours_shapes} vs "
                             f"{their_shapes}.")
        layer.set_weights(other.get_weights())
        if layer.name in HEAD_LAYERS:
            head = 1
        else:
            copied += 1
    return {"layers": copied, "head": head}


def find_keras_file(path: str) -> Optional[str]:
    """The ``.keras`` file that ``path`` names: the file itself, an export directory's
    ``model.keras``, or a run directory's ``export/model.keras``; None when there is none."""
    if path.endswith(".keras") and os.path.isfile(path):
        return path
    for candidate in (os.path.join(path, "model.keras"), os.path.join(path, "export", "model.keras")):
        if os.path.isfile(candidate):
            return candidate
    return None
