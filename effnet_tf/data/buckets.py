"""Fixed image-size buckets.

Every distinct input shape costs a full XLA compile on a TPU, so progressive learning snaps
its per-stage image sizes to a small fixed set of sizes ("buckets") and the pipeline emits
batches of exactly ``[per_replica_batch, s, s, 3]`` for one bucket ``s`` at a time.
"""
from __future__ import annotations

from typing import Iterable, Tuple


def make_buckets(min_size: int = 128, max_size: int = 384, step: int = 32) -> Tuple[int, ...]:
    """Returns the sorted tuple of multiples of ``step`` in ``[min_size, max_size]``.

    ``make_buckets(128, 384, 32)`` is ``(128, 160, ..., 384)``. Multiples of 32 keep every
    feature map of a stride-32 network an integer size.
    """
    for name, value in (("min_size", min_size), ("max_size", max_size), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"make_buckets: {name} must be a positive int, got {value!r}")
    if max_size < min_size:
        raise ValueError(
            f"make_buckets: max_size ({max_size}) must be >= min_size ({min_size})")
    first = -(-min_size // step) * step  # smallest multiple of step >= min_size
    buckets = tuple(range(first, max_size + 1, step))
    if not buckets:
        raise ValueError(
            f"make_buckets: no multiple of step={step} lies in [{min_size}, {max_size}]")
    return buckets


def validate_buckets(buckets: Iterable[int]) -> Tuple[int, ...]:
    """Returns ``buckets`` as a sorted tuple of unique positive ints, or raises ValueError."""
    try:
        values = tuple(buckets)
    except TypeError:
        raise ValueError(f"buckets must be an iterable of positive ints, got {buckets!r}") from None
    if not values:
        raise ValueError("buckets must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"buckets must be positive ints, got {v!r} in {values!r}")
    return tuple(sorted(set(values)))


def snap_to_bucket(size: int, buckets: Iterable[int]) -> int:
    """Returns the bucket nearest to ``size``; a tie goes to the larger bucket.

    Sizes outside the bucket range snap to the nearest end.
    """
    if isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0:
        raise ValueError(f"snap_to_bucket: size must be a positive number, got {size!r}")
    values = validate_buckets(buckets)
    # min over (distance, -bucket): equal distances prefer the larger bucket.
    return min(values, key=lambda b: (abs(b - size), -b))
