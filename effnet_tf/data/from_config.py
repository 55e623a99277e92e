"""A data source from a ``DataConfig`` (``effnet_tf.config``), duck-typed on its fields."""
from __future__ import annotations

from typing import Any, Dict

from effnet_tf.data.registry import get_source
from effnet_tf.data.sources import Source


def _kind(name: str) -> str:
    return name.split(":", 1)[0].strip().lower()


def source_kwargs(data_config) -> Dict[str, Any]:
    """The ``get_source`` keyword arguments that apply to ``data.name``'s kind (nulls dropped)."""
    d = data_config
    per_kind = {
        "synthetic": dict(num_classes=d.num_classes, train_examples=d.train_examples,
                          validation_examples=d.eval_examples),
        "tfds": dict(data_dir=d.data_dir),
        "tfrecord": dict(train_pattern=d.train_pattern, validation_pattern=d.eval_pattern,
                         num_classes=d.num_classes, label_offset=d.label_offset),
        "folder": {},
    }.get(_kind(d.name), {})
    return {k: v for k, v in per_kind.items() if v is not None}


def open_source(data_config) -> Source:
    """The source of ``data.name`` with ``data.data_dir`` applied.

    For ``tfds:`` sources ``data_dir`` is TFDS' data_dir; for ``tfrecord:`` and ``folder:``
    sources it replaces the directory in the name (``--data_dir=gs://bucket/imagenet``).
    """
    name, kind = data_config.name, _kind(data_config.name)
    if kind in ("tfrecord", "folder") and data_config.data_dir:
        name = f"{kind}:{data_config.data_dir}"
    return get_source(name, **source_kwargs(data_config))
