"""What changed between two configs, key by key (e.g. to recognise a checkpoint of another model)."""

from __future__ import annotations

from typing import List, Sequence

from effnet_tf.config.schema import ExperimentConfig, get_value

#: The keys that decide which variables a checkpoint holds and their shapes.
ARCHITECTURE_KEYS = ("model.name", "model.blocks", "model.width", "model.depth", "model.num_classes")


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "null" if value is None else str(value)


def differences(before: ExperimentConfig, after: ExperimentConfig,
                keys: Sequence[str] = ARCHITECTURE_KEYS) -> List[str]:
    """``["model.width 0.5 -> 0.75", ...]`` for every key in ``keys`` whose value differs."""
    return [f"{key} {_show(get_value(before, key))} -> {_show(get_value(after, key))}"
            for key in keys if get_value(before, key) != get_value(after, key)]
