"""Small matplotlib helpers shared by the notebooks in ``notebooks/``.

Each function draws one figure and returns it (``plt.show()`` is left to the caller), so the
notebooks stay about the library rather than about plotting. matplotlib is imported on first
use: ``pip install matplotlib`` (or ``effnet_tf[notebooks]``) to use this module.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

#: Schedule fields plotted by :func:`plot_schedule`, with their axis labels.
SCHEDULE_FIELDS = (
    ("image_size", "image size (px)"),
    ("randaug_magnitude", "RandAugment magnitude"),
    ("mixup_alpha", "mixup alpha"),
    ("dropout_rate", "dropout rate"),
)


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("effnet_tf.notebook_utils needs matplotlib: pip install matplotlib") from error
    return plt


def to_uint8(images) -> np.ndarray:
    """Images of any numeric dtype in 0..255 (uint8, float32, bfloat16 tensors) as a uint8 array."""
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return array
    # bfloat16 (ml_dtypes) and floats: the pipeline keeps the 0..255 range after mixing.
    return np.clip(np.round(array.astype(np.float32)), 0, 255).astype(np.uint8)


def plot_history(history, metrics: Sequence[str] = ("loss", "accuracy"), title: Optional[str] = None):
    """Training and validation curves, one panel per metric.

    Args:
        history: a ``keras.callbacks.History`` (what ``model.fit`` returns) or its ``.history``
            dict ``{"loss": [...], "val_loss": [...], ...}``.
        metrics: the metric names to plot; ``val_<name>`` is drawn beside ``<name>`` when present.
        title: optional figure title.
    """
    values = getattr(history, "history", history)
    missing = [m for m in metrics if m not in values]
    if missing:
        raise ValueError(f"plot_history: metric(s) {missing} not in the history; it has {sorted(values)}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, name in zip(axes[0], metrics):
        epochs = np.arange(1, len(values[name]) + 1)
        ax.plot(epochs, values[name], "o-", label="train")
        if f"val_{name}" in values:
            ax.plot(epochs, values[f"val_{name}"], "s--", label="validation")
            ax.legend()
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_image_grid(images, titles: Optional[Sequence[str]] = None, colors: Optional[Sequence[str]] = None,
                    columns: int = 6, size: float = 2.0, title: Optional[str] = None):
    """A grid of images (``[N, H, W, 3]``, 0..255, any dtype) with optional per-image titles.

    ``colors`` colours the titles (e.g. green for a right prediction, red for a wrong one).
    """
    images = to_uint8(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"show_image_grid: images must be [N, H, W, 3], got shape {images.shape}")
    count = len(images)
    if titles is not None and len(titles) != count:
        raise ValueError(f"show_image_grid: {len(titles)} titles for {count} images")
    plt = _pyplot()
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    height = rows * (size + 0.22 * lines) + (0.4 if title else 0.0)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, height), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= count:
            continue
        ax.imshow(images[index])
        if titles is not None:
            style = {"color": colors[index]} if colors is not None else {}
            ax.set_title(titles[index], fontsize=9, **style)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_schedule(schedules: Mapping[str, Sequence], fields=SCHEDULE_FIELDS, title: Optional[str] = None):
    """Progressive-learning schedules against epoch, one panel per field.

    Args:
        schedules: ``{label: per_epoch_stages}`` where ``per_epoch_stages[e]`` is the stage that
            trains epoch ``e`` (e.g. ``[stage_at_epoch(spec, seed, e) for e in range(epochs)]``);
            anything with ``image_size``, ``randaug_magnitude``, ... attributes (or dict keys).
        fields: ``(attribute, axis label)`` pairs to plot.
        title: optional figure title.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(fields), figsize=(4.2 * len(fields), 3.4), squeeze=False)
    for ax, (name, label) in zip(axes[0], fields):
        for series, stages in schedules.items():
            values = [stage[name] if isinstance(stage, Mapping) else getattr(stage, name) for stage in stages]
            # Epoch e trains with stage(e) from e to e + 1: a post-step line shows whole epochs.
            ax.step(np.arange(len(values) + 1), values + values[-1:], where="post", label=series)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
