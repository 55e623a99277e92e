"""Dotted ``key=value`` overrides (``--params_override``) with type checking and helpful errors.

``"train.epochs=30,data.name=tfds:cifar10,model.blocks=[r1_k3_s1_e1_i32_o16_c1,r2_k3_s2_e4_i16_o32_c1]"``:
values are parsed as YAML; commas inside ``[...]``, ``{...}`` or quotes do not split.
An unknown key is an error that lists the closest valid keys; a value of the wrong type is an
error naming the key, the value and the expected type.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, Dict, List, Tuple

import yaml

from effnet_tf.config import schema


class ConfigKeyError(KeyError, ValueError):
    """An unknown config key. (A ValueError too, so callers can catch one type.)"""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def split_overrides(text: str) -> List[str]:
    """Splits ``a=1,b=[1,2],c='x,y'`` on the top-level commas."""
    parts, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def parse_overrides(text: str) -> List[Tuple[str, Any]]:
    """``"train.epochs=30,..."`` -> ``[("train.epochs", 30), ...]`` with YAML-typed values."""
    if not text:
        return []
    pairs = []
    for item in split_overrides(text):
        if "=" not in item:
            raise ValueError(f"--params_override item {item!r} is not of the form key=value.")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise ValueError(f"--params_override {key}={raw!r}: value is not valid YAML ({error}).") from error
        pairs.append((key, value))
    return pairs


def flatten(values: Dict[str, Any], source: str = "config") -> List[Tuple[str, Any]]:
    """Nested ``{"train": {"epochs": 3}}`` -> ``[("train.epochs", 3)]`` (section level only)."""
    pairs = []
    for section, body in values.items():
        if isinstance(body, dict):
            for name, value in body.items():
                pairs.append((f"{section}.{name}", value))
        elif section in schema.SECTIONS:
            raise TypeError(f"Config section {section!r} (from {source}) must be a mapping of keys "
                            f"(e.g. {section}:\n  key: value), got {body!r}.")
        else:
            pairs.append((str(section), body))  # reported as an unknown key below
    return pairs


def closest_keys(key: str, n: int = 5) -> List[str]:
    """The valid dotted keys closest to ``key`` (whole key first, then same leaf name)."""
    keys = schema.valid_keys()
    close = difflib.get_close_matches(key, keys, n=n, cutoff=0.5)
    leaf = key.rsplit(".", 1)[-1]
    leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
    for match in difflib.get_close_matches(leaf, list(leaves), n=n, cutoff=0.6):
        if leaves[match] not in close:
            close.append(leaves[match])
    return close[:n]


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        args = typing.get_args(annotation)
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, List):
        (inner,) = typing.get_args(annotation) or (Any,)
        return f"list of {_type_name(inner)}"
    return getattr(annotation, "__name__", str(annotation))


class _Mismatch(Exception):
    pass


def coerce(value: Any, annotation) -> Any:
    """Converts ``value`` to ``annotation`` if it is a sensible reading of it; else raises _Mismatch."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        args = typing.get_args(annotation)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        # Prefer an exact type match (e.g. bool before str) before conversions.
        for arg in args:
            if arg is not type(None) and _exact(value, arg):
                return value
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin in (list, List):
        (inner,) = typing.get_args(annotation) or (Any,)
        if isinstance(value, str):  # "a,b" is accepted for a list of strings
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [coerce(v, inner) for v in value]
    if annotation is Any:
        return value
    if value is None:
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    raise _Mismatch


def _exact(value, annotation) -> bool:
    if annotation is bool:
        return isinstance(value, bool)
    if annotation in (int, float, str):
        return type(value) is annotation
    return False


def apply_overrides(config, pairs, source: str = "--params_override"):
    """Applies ``[(dotted_key, value), ...]`` to ``config`` in place (and returns it)."""
    types = schema.field_types()
    fields = dict(schema.config_fields())
    for key, value in pairs:
        if key not in types:
            close = closest_keys(key)
            hint = f" Closest valid keys: {', '.join(close)}." if close else ""
            raise ConfigKeyError(
                f"Unknown config key {key!r} (from {source}).{hint} "
                f"Sections: {', '.join(schema.SECTIONS)}."
            )
        annotation = types[key]
        try:
            converted = coerce(value, annotation)
        except _Mismatch:
            raise TypeError(
                f"Config key {key!r} (from {source}) expects {_type_name(annotation)}, "
                f"got {value!r} ({type(value).__name__})."
            ) from None
        choices = fields[key].metadata.get("choices")
        if choices is not None and converted not in choices:
            raise ValueError(f"Config key {key!r} (from {source}) must be one of {list(choices)}, got {converted!r}.")
        section, name = key.split(".", 1)
        setattr(getattr(config, section), name, converted)
    return config


def apply_override_string(config, text: str):
    """Applies a ``--params_override`` string."""
    return apply_overrides(config, parse_overrides(text), source="--params_override")
