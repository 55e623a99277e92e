"""Gradient checkpointing: a block's activations recomputed in the backward pass.

Built on ``tf.recompute_grad`` (works under ``tf.function``, XLA, TPU and distribution
strategies): only the block's input is kept for the backward pass, and the block runs again to
get its gradients. Two things a plain ``tf.recompute_grad(block)`` gets wrong, and are handled:

* BatchNorm would move its moving statistics a second time in the recomputation. Every call after
  the first runs under ``frozen_statistics``: it normalizes with the same batch moments (so the
  gradients are the plain model's) and writes nothing.
* Random ops (stochastic depth) would draw a new mask in the recomputation. The blocks therefore
  recompute only their deterministic body; the drop-path and residual stay outside.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from effnet_tf.blocks.batch_norm import frozen_statistics


def recompute_grad(body: Callable[[tf.Tensor], tf.Tensor]) -> Callable[[tf.Tensor], tf.Tensor]:
    """``body`` with its activations recomputed in the backward pass (see the module docstring).

    Make a fresh wrapper per call of the layer (per trace): its first call is the forward pass,
    every later one a recomputation.
    """
    calls = 0

    def first_then_frozen(inputs):
        nonlocal calls
        calls += 1
        if calls == 1:
            return body(inputs)
        with frozen_statistics():
            return body(inputs)

    return tf.recompute_grad(first_then_frozen)
