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


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML 1.2 forbids it; PyYAML
    silently keeps the last value, so a doubled key would change a run without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, path: str) -> Any:
    """The YAML document in ``text`` (from ``path``); a ``ValueError`` naming the file, line and
    problem for invalid YAML or a duplicate key."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"Config file {path!r} is not valid YAML{where}: {problem}.") from error


def read_config_text(path: str) -> str:
    """The text of a config file; a ``ValueError`` naming the file when it is not UTF-8."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Config file {path!r} does not exist.")
    with tf.io.gfile.GFile(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ValueError(f"Config file {path!r} is not UTF-8 text: byte {data[error.start]:#04x} at line {line} "
                         f"(offset {error.start}). Save it as UTF-8.") from error


def load_yaml_files(paths: Sequence[str], base: Optional[ExperimentConfig] = None) -> ExperimentConfig:
    """Applies the YAML files in order (later files override earlier ones) over ``base``."""
    config = copy_config(base) if base is not None else ExperimentConfig()
    for path in paths:
        values = parse_yaml(read_config_text(path), path)
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
