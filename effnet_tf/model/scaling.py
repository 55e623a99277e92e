"""Compound scaling: how width and depth coefficients turn base block strings into a network."""

from __future__ import annotations

import math
from typing import List, Sequence

from effnet_tf.blocks.block_string import BlockArgs

DIVISOR = 8


def round_filters(filters: float, width: float, v1_guard: bool, divisor: int = DIVISOR) -> int:
    """Scales a filter count by ``width`` and rounds it to a multiple of ``divisor``.

    ``v1_guard``: EfficientNet V1 adds one more ``divisor`` when rounding lost over 10%;
    EfficientNetV2 has no such guard. This difference is what makes parameter counts agree
    with the reference models.
    """
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if v1_guard and rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def scale_stages(stages: Sequence[BlockArgs], width: float, depth: float, v1_guard: bool) -> List[BlockArgs]:
    """Applies width to every stage's filters and depth to its repeats."""
    return [
        stage.replace(
            input_filters=round_filters(stage.input_filters, width, v1_guard),
            output_filters=round_filters(stage.output_filters, width, v1_guard),
            repeats=round_repeats(stage.repeats, depth),
        )
        for stage in stages
    ]


def expand_stages(stages: Sequence[BlockArgs]) -> List[List[BlockArgs]]:
    """One BlockArgs per block: only a stage's first block takes its stride and in→out change."""
    blocks = []
    for stage in stages:
        first = stage.replace(repeats=1)
        rest = stage.replace(repeats=1, stride=1, input_filters=stage.output_filters)
        blocks.append([first] + [rest] * (stage.repeats - 1))
    return blocks
