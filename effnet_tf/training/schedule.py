"""Progressive learning with adaptive regularization (EfficientNetV2, Algorithm 1), as pure functions.

The schedule is a pure function of (spec, seed, epoch): a resumed run recomputes the stage it is
in from the restored epoch, with nothing else saved.

* ``none``: one stage at the final size and regularization.
* ``staged``: N equal stages; stage i trains at ``S0 + (Se - S0) * i / (N - 1)`` (the paper) or
  ``S0 + (Se - S0) * (i + 1) / N`` (the official code, ``sizing="official"``), and every
  regularizer goes linearly from its minimum to its maximum, ``i / (N - 1)``.
* ``random``: the paper's ablation. Every ``interval`` epochs an image size is sampled uniformly
  from the buckets (once per block, not per batch: a TPU compiles one program per shape) and the
  regularization follows the sampled size: ``fraction = (size - S_min) / (S_max - S_min)``.

Sizes snap to the pipeline's buckets, so each size compiles one train program.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from effnet_tf.config.schema import SCHEDULE_MODES as MODES
from effnet_tf.config.schema import SIZINGS
from effnet_tf.data.buckets import make_buckets, snap_to_bucket


@dataclass(frozen=True)
class Regularization:
    """The regularization of one stage."""

    randaug_magnitude: float
    mixup_alpha: float
    cutmix_alpha: float
    dropout_rate: float
    drop_connect_rate: float


@dataclass(frozen=True)
class ScheduleSpec:
    """Everything the schedule depends on, with concrete numbers (see ``spec_from_config``)."""

    mode: str
    epochs: int
    buckets: Tuple[int, ...]
    min_size: int
    max_size: int
    min_reg: Regularization
    max_reg: Regularization
    num_stages: int = 4
    sizing: str = "paper"
    interval: int = 8

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"progressive mode must be one of {MODES}, got {self.mode!r}.")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if not self.buckets or list(self.buckets) != sorted(self.buckets):
            raise ValueError(f"buckets must be a non-empty sorted sequence of sizes, got {self.buckets!r}.")
        if self.mode == "staged" and not 1 <= self.num_stages <= self.epochs:
            raise ValueError(f"num_stages must be in [1, epochs={self.epochs}], got {self.num_stages}.")
        if self.sizing not in SIZINGS:
            raise ValueError(f"sizing must be one of {SIZINGS}, got {self.sizing!r}.")
        if self.interval < 1:
            raise ValueError(f"random interval must be >= 1 epoch, got {self.interval}.")


@dataclass(frozen=True)
class Stage:
    """A run of epochs ``[start_epoch, end_epoch)`` at one image size and regularization."""

    index: int
    start_epoch: int
    end_epoch: int
    image_size: int
    randaug_magnitude: float
    mixup_alpha: float
    cutmix_alpha: float
    dropout_rate: float
    drop_connect_rate: float

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.start_epoch

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["epochs"] = self.epochs
        return values


def training_buckets(config) -> Tuple[int, ...]:
    """The image-size buckets a resolved config trains over.

    Multiples of ``progressive.bucket_step`` from the first stage's size up to ``train.image_size``,
    plus ``train.image_size`` itself, so the final stage trains at the size the recipe names
    (V2-S: 300 px, which is no multiple of 32). ``mode: none`` trains at that one size.
    """
    t, p = config.train, config.progressive
    if p.mode == "none":
        return (int(t.image_size),)
    return tuple(sorted(set(make_buckets(p.min_image_size, t.image_size, p.bucket_step)) | {int(t.image_size)}))


def _interpolate(low: Regularization, high: Regularization, fraction: float) -> Regularization:
    fraction = float(min(max(fraction, 0.0), 1.0))
    values = {
        f.name: float(getattr(low, f.name) + (getattr(high, f.name) - getattr(low, f.name)) * fraction)
        for f in dataclasses.fields(Regularization)
    }
    return Regularization(**values)


def _stage(index, start, end, size, reg: Regularization) -> Stage:
    return Stage(index=index, start_epoch=start, end_epoch=end, image_size=int(size), **dataclasses.asdict(reg))


def _staged(spec: ScheduleSpec) -> List[Stage]:
    n = spec.num_stages
    stages = []
    for i in range(n):
        start, end = (i * spec.epochs) // n, ((i + 1) * spec.epochs) // n
        if spec.sizing == "official":
            size_fraction = (i + 1) / n
        else:
            size_fraction = i / (n - 1) if n > 1 else 1.0
        reg_fraction = i / (n - 1) if n > 1 else 1.0
        size = spec.min_size + (spec.max_size - spec.min_size) * size_fraction
        stages.append(_stage(i, start, end, snap_to_bucket(size, spec.buckets),
                             _interpolate(spec.min_reg, spec.max_reg, reg_fraction)))
    return stages


def _random_block(spec: ScheduleSpec, seed: int, block: int) -> Stage:
    start = block * spec.interval
    end = min(start + spec.interval, spec.epochs)
    # One generator per (seed, block): the block's size does not depend on any earlier block,
    # so a resumed run recomputes it from the epoch alone.
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, block])
    size = int(spec.buckets[int(rng.integers(len(spec.buckets)))])
    low, high = spec.buckets[0], spec.buckets[-1]
    fraction = (size - low) / (high - low) if high > low else 1.0
    return _stage(block, start, end, size, _interpolate(spec.min_reg, spec.max_reg, fraction))


def build_schedule(spec: ScheduleSpec, seed: int = 0) -> List[Stage]:
    """All stages of a run, in order (stages with no epochs are dropped)."""
    if spec.mode == "none":
        stages = [_stage(0, 0, spec.epochs, snap_to_bucket(spec.max_size, spec.buckets), spec.max_reg)]
    elif spec.mode == "staged":
        stages = _staged(spec)
    else:
        blocks = -(-spec.epochs // spec.interval)
        stages = [_random_block(spec, seed, b) for b in range(blocks)]
    return [stage for stage in stages if stage.epochs > 0]


def stage_at_epoch(spec: ScheduleSpec, seed: int, epoch: int) -> Stage:
    """The stage that trains ``epoch`` (0-based); the last stage for ``epoch >= epochs``."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}.")
    stages = build_schedule(spec, seed)
    for stage in stages:
        if stage.start_epoch <= epoch < stage.end_epoch:
            return stage
    return stages[-1]


def distinct_sizes(stages: Sequence[Stage]) -> List[int]:
    """The image sizes a schedule trains at, in order of first use."""
    seen: List[int] = []
    for stage in stages:
        if stage.image_size not in seen:
            seen.append(stage.image_size)
    return seen


def describe(stage: Stage, total_stages: int, compiled: int) -> str:
    """The one-line log of a stage start."""
    return (
        f"Stage {stage.index + 1}/{total_stages}: epochs {stage.start_epoch + 1}-{stage.end_epoch} "
        f"({stage.epochs} epochs) | image size {stage.image_size} | RandAugment magnitude "
        f"{stage.randaug_magnitude:.1f} | mixup {stage.mixup_alpha:.2f} | cutmix {stage.cutmix_alpha:.2f} | "
        f"dropout {stage.dropout_rate:.3f} | stochastic depth {stage.drop_connect_rate:.3f} | "
        f"compiled train functions so far: {compiled}"
    )


def spec_from_config(config, buckets: Sequence[int]) -> ScheduleSpec:
    """The schedule of a resolved ``ExperimentConfig`` (see ``config.resolve``) over ``buckets``."""
    t, p, m = config.train, config.progressive, config.model
    max_reg = Regularization(
        randaug_magnitude=t.randaug_magnitude, mixup_alpha=t.mixup_alpha, cutmix_alpha=t.cutmix_alpha,
        dropout_rate=m.dropout_rate, drop_connect_rate=m.drop_connect_rate,
    )
    if p.mode == "none":
        min_reg, min_size = max_reg, t.image_size
    else:
        min_reg = Regularization(
            randaug_magnitude=p.min_randaug_magnitude, mixup_alpha=p.min_mixup_alpha,
            cutmix_alpha=p.min_cutmix_alpha, dropout_rate=p.min_dropout_rate,
            drop_connect_rate=p.min_drop_connect_rate,
        )
        min_size = p.min_image_size
    return ScheduleSpec(
        mode=p.mode, epochs=t.epochs, buckets=tuple(int(b) for b in buckets), min_size=min_size,
        max_size=t.image_size, min_reg=min_reg, max_reg=max_reg, num_stages=p.num_stages,
        sizing=p.sizing, interval=p.random_interval_epochs,
    )
