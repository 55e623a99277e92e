"""The config as data: dicts, YAML text and files (local or gs://)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

import yaml

from effnet_tf.config.overrides import apply_overrides, flatten
from effnet_tf.config.schema import ExperimentConfig, copy_config


def to_dict(config: ExperimentConfig) -> Dict[str, Any]:
    """Plain nested dict (YAML-ready) of a config."""
    return dataclasses.asdict(config)


def to_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)


def from_dict(values: Dict[str, Any], base: Optional[ExperimentConfig] = None, source: str = "dict") -> ExperimentConfig:
    """A copy of ``base`` (default: the defaults) with the nested ``values`` applied, type-checked."""
    config = copy_config(base) if base is not None else ExperimentConfig()
    return apply_overrides(config, flatten(values, source=source), source=source)


def load_yaml_files(paths: Sequence[str], base: Optional[ExperimentConfig] = None) -> ExperimentConfig:
    """Applies the YAML files in order (later files override earlier ones) over ``base``."""
    import tensorflow as tf

    config = copy_config(base) if base is not None else ExperimentConfig()
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"Config file {path!r} does not exist.")
        with tf.io.gfile.GFile(path, "r") as handle:
            try:
                values = yaml.safe_load(handle.read())
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                problem = getattr(error, "problem", None) or str(error).splitlines()[0]
                raise ValueError(f"Config file {path!r} is not valid YAML{where}: {problem}.") from error
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"Config file {path!r} must hold a mapping of sections, got {type(values).__name__}.")
        config = from_dict(values, base=config, source=path)
    return config


def save_yaml(config: ExperimentConfig, path: str) -> None:
    """Writes the config as YAML (local or gs:// path, atomically), creating the directory."""
    from effnet_tf.storage.paths import write_text

    write_text(path, to_yaml(config))
