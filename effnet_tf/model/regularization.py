"""Changing dropout and stochastic depth of a built model, for progressive learning.

The rates live in ``tf.Variable``s held by ``ScheduledDropout``/``StochasticDepth`` layers, so
assigning them changes what the already-compiled train step does: no rebuild, no retrace. (The
official TF code computes a dropout schedule and never applies it.)
"""

from __future__ import annotations

from typing import Dict, Optional

import keras

from effnet_tf.blocks.layers import ScheduledDropout
from effnet_tf.blocks.mbconv import FusedMBConv, MBConv


def _blocks(model: keras.Model):
    return [layer for layer in model.layers if isinstance(layer, (MBConv, FusedMBConv))]


def set_regularization(
    model: keras.Model,
    dropout_rate: Optional[float] = None,
    drop_connect_rate: Optional[float] = None,
) -> None:
    """Sets the head dropout and the stochastic-depth rate (of the last block) of ``model``.

    Block j of N gets ``drop_connect_rate * j / N``, as when the model was built. ``None``
    leaves that rate unchanged.
    """
    if dropout_rate is not None:
        heads = [layer for layer in model.layers if isinstance(layer, ScheduledDropout)]
        for layer in heads:
            layer.set_rate(dropout_rate)
        if hasattr(model, "dropout_rate") and heads:
            model.dropout_rate = float(dropout_rate)
    if drop_connect_rate is not None:
        blocks = _blocks(model)
        for index, block in enumerate(blocks):
            block.set_drop_connect_rate(drop_connect_rate * index / len(blocks))
        if hasattr(model, "drop_connect_rate"):
            model.drop_connect_rate = float(drop_connect_rate)


def get_regularization(model: keras.Model) -> Dict[str, Optional[float]]:
    """The rates in force: ``{"dropout_rate": ..., "drop_connect_rate": ...}`` (None if absent)."""
    heads = [layer for layer in model.layers if isinstance(layer, ScheduledDropout)]
    blocks = _blocks(model)
    last = blocks[-1].drop_connect_rate * len(blocks) / (len(blocks) - 1) if len(blocks) > 1 else None
    return {"dropout_rate": heads[0].rate if heads else None, "drop_connect_rate": last}
