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


def scale_stages(stages: Sequence[BlockArgs], width: float, depth: float, v1_guard: bool,
                 fix_first_last_repeats: bool = False) -> List[BlockArgs]:
    """Applies width to every stage's filters and depth to its repeats (not to the first and
    last stage's repeats with ``fix_first_last_repeats``: the official Lite models)."""
    scaled = [
        stage.replace(
            input_filters=round_filters(stage.input_filters, width, v1_guard),
            output_filters=round_filters(stage.output_filters, width, v1_guard),
            repeats=round_repeats(stage.repeats, depth),
        )
        for stage in stages
    ]
    if fix_first_last_repeats:
        scaled[0] = scaled[0].replace(repeats=stages[0].repeats)
        scaled[-1] = scaled[-1].replace(repeats=stages[-1].repeats)
    return scaled


def fed_by_stem(block: BlockArgs, stem_filters: int) -> BlockArgs:
    """The network's first block, reading the stem's ``stem_filters`` channels where its block
    string declares another input (EdgeTPU: a 32-channel stem, ``i24``; Lite: the unscaled stem).
    As in the official code the expansion keeps its declared width (declared input x expand
    ratio), and a block without expansion works on the channels it gets."""
    if block.input_filters == stem_filters:
        return block
    if block.expand_ratio == 1:
        return block.replace(input_filters=stem_filters)
    return block.replace(input_filters=stem_filters,
                         expand_ratio=block.input_filters * block.expand_ratio / stem_filters)


def expand_stages(stages: Sequence[BlockArgs]) -> List[List[BlockArgs]]:
    """One BlockArgs per block: only a stage's first block takes its stride and in→out change."""
    blocks = []
    for stage in stages:
        first = stage.replace(repeats=1)
        rest = stage.replace(repeats=1, stride=1, input_filters=stage.output_filters)
        blocks.append([first] + [rest] * (stage.repeats - 1))
    return blocks
