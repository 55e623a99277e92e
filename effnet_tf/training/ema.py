"""The EMA weights in the model for evaluation and export (``ema_weights``), swapped back after.

The optimizers keep the EMA (``effnet_tf.training.optimizer``); this swaps it in exactly (values
are exchanged, not recomputed), replica by replica under any strategy.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras
import tensorflow as tf

from effnet_tf import keras_internals
from effnet_tf.training.optimizer import tf_variable, base_optimizer


def _swap_statistics_with_average(optimizer) -> None:
    """Swaps each replica's copy of a statistic with its average, replica by replica (exact, no
    communication; the copies of a replica-local variable may differ)."""
    strategy = keras_internals.optimizer_strategy(optimizer)
    for statistic, average in getattr(optimizer, "moving_statistics_pairs", []):
        for mine, average_copy in zip(strategy.experimental_local_results(tf_variable(statistic)),
                                      strategy.experimental_local_results(average)):
            with tf.device(mine.device):
                saved = tf.identity(mine)
                mine.assign(average_copy)
                average_copy.assign(saved)


def _swap_with_average(optimizer) -> None:
    strategy = keras_internals.optimizer_strategy(optimizer)

    def swap(variable, average):
        saved = tf.identity(variable)
        variable.assign(average)
        average.assign(saved)

    with strategy.scope():
        for var, avg in keras_internals.ema_pairs(optimizer):
            if avg is None:
                continue
            strategy.extended.update(tf_variable(var), swap, args=(tf_variable(avg),), group=True)
    _swap_statistics_with_average(optimizer)


def has_ema(model_or_optimizer) -> bool:
    optimizer = getattr(model_or_optimizer, "optimizer", model_or_optimizer)
    optimizer = base_optimizer(optimizer)
    return bool(getattr(optimizer, "use_ema", False)) and keras_internals.has_ema_averages(optimizer)


@contextlib.contextmanager
def ema_weights(model: keras.Model, enabled: bool = True) -> Iterator[bool]:
    """Puts the EMA weights (and the EMA of the BatchNorm statistics, when the optimizer tracks
    them) into ``model`` for the ``with`` body and the trained ones back after.

    Yields whether the EMA is in use (False when the optimizer has none or ``enabled`` is False).
    The swap is exact (values are exchanged, not recomputed) and distribution-aware.
    """
    if not enabled or not has_ema(model):
        yield False
        return
    optimizer = base_optimizer(model.optimizer)
    _swap_with_average(optimizer)
    try:
        yield True
    finally:
        _swap_with_average(optimizer)
