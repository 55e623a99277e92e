"""Block strings: the official EfficientNet grammar for one stage of blocks.

    r{repeats}_k{kernel}_s{stride}_e{expand}_i{in}_o{out}[_se{ratio}][_c{0|1}][_noskip]

V2 strings write the stride as ``s2``; V1 strings write one digit per axis (``s22``/``s11``).
Both decode to the same :class:`BlockArgs`. ``encode`` writes the canonical form (single-digit
stride, ``c1`` only for Fused-MBConv, ``se`` only when present), so
``encode(decode(encode(decode(s)))) == encode(decode(s))``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, List, Optional, Sequence

REQUIRED_KEYS = ("r", "k", "s", "e", "i", "o")
OPTIONAL_KEYS = ("se", "c", "noskip")
VALID_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS

# "se" and "noskip" must be tried before the one-letter keys they start with.
_TOKEN_RE = re.compile(r"^(noskip|se|r|k|s|e|i|o|c)(.*)$")
_KEY_MEANING = {
    "r": "repeats (int >= 1)",
    "k": "kernel size (odd int >= 1)",
    "s": "stride (1 or 2; V1 style 11 or 22)",
    "e": "expand ratio (number > 0)",
    "i": "input filters (int >= 1)",
    "o": "output filters (int >= 1)",
    "se": "squeeze-excite ratio (0 < x <= 1)",
    "c": "conv type (0 = MBConv, 1 = Fused-MBConv)",
    "noskip": "flag: no residual connection",
}


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One stage of blocks, before compound scaling."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: float
    input_filters: int
    output_filters: int
    se_ratio: Optional[float] = None
    fused: bool = False
    skip: bool = True

    def replace(self, **changes) -> "BlockArgs":
        return dataclasses.replace(self, **changes)


def _valid_keys_text() -> str:
    return ", ".join(f"{k} = {_KEY_MEANING[k]}" for k in VALID_KEYS)


def _error(block_string: str, token: str, problem: str) -> ValueError:
    return ValueError(
        f"Invalid block string {block_string!r}: token {token!r} {problem}. "
        f"Valid keys: {_valid_keys_text()}. "
        "Example: 'r2_k3_s2_e4_i24_o48_c1'."
    )


def _parse_int(block_string: str, token: str, text: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise _error(block_string, token, f"has a non-integer value {text!r}")
    return int(text)


def _parse_float(block_string: str, token: str, text: str) -> float:
    if not re.fullmatch(r"\d+(\.\d*)?|\.\d+", text):
        raise _error(block_string, token, f"has a non-numeric value {text!r}")
    return float(text)


def decode(block_string: str) -> BlockArgs:
    """Parses one block string into :class:`BlockArgs`; raises ``ValueError`` on any defect."""
    if not isinstance(block_string, str):
        raise TypeError(f"A block string must be a str, got {type(block_string).__name__}: {block_string!r}")
    if not block_string.strip():
        raise ValueError(
            f"Invalid block string {block_string!r}: it is empty. Valid keys: {_valid_keys_text()}."
        )
    values = {}
    for token in block_string.strip().split("_"):
        match = _TOKEN_RE.match(token)
        if not token or match is None:
            raise _error(block_string, token, "has an unknown key")
        key, text = match.groups()
        if key in values:
            raise _error(block_string, token, f"repeats the key {key!r}")
        if key == "noskip":
            if text:
                raise _error(block_string, token, "takes no value")
            values[key] = True
        elif key in ("e", "se"):
            values[key] = _parse_float(block_string, token, text)
        else:
            values[key] = _parse_int(block_string, token, text)
            if key == "s":
                values[key] = _decode_stride(block_string, token, text)
    missing = [k for k in REQUIRED_KEYS if k not in values]
    if missing:
        raise ValueError(
            f"Invalid block string {block_string!r}: missing required key(s) {', '.join(missing)}. "
            f"Valid keys: {_valid_keys_text()}."
        )
    checks = (
        ("r", values["r"] >= 1, "must be >= 1"),
        ("k", values["k"] >= 1 and values["k"] % 2 == 1, "must be an odd int >= 1"),
        ("e", values["e"] > 0, "must be > 0"),
        ("i", values["i"] >= 1, "must be >= 1"),
        ("o", values["o"] >= 1, "must be >= 1"),
        ("se", 0 < values.get("se", 1.0) <= 1, "must be in (0, 1]"),
        ("c", values.get("c", 0) in (0, 1), "must be 0 (MBConv) or 1 (Fused-MBConv)"),
    )
    for key, ok, rule in checks:
        if not ok:
            token = next(t for t in block_string.split("_") if _TOKEN_RE.match(t).group(1) == key)
            raise _error(block_string, token, rule)
    return BlockArgs(
        repeats=values["r"],
        kernel_size=values["k"],
        stride=values["s"],
        expand_ratio=values["e"],
        input_filters=values["i"],
        output_filters=values["o"],
        se_ratio=values.get("se"),
        fused=values.get("c", 0) == 1,
        skip=not values.get("noskip", False),
    )


def _decode_stride(block_string: str, token: str, text: str) -> int:
    # V1 writes one digit per spatial axis; only square strides exist in EfficientNets.
    if text in ("1", "11"):
        return 1
    if text in ("2", "22"):
        return 2
    raise _error(block_string, token, "must be stride 1 or 2 (written s1/s2, or V1 style s11/s22)")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def encode(args: BlockArgs) -> str:
    """Writes the canonical block string of ``args``."""
    parts = [
        f"r{args.repeats}",
        f"k{args.kernel_size}",
        f"s{args.stride}",
        f"e{_number(args.expand_ratio)}",
        f"i{args.input_filters}",
        f"o{args.output_filters}",
    ]
    if args.se_ratio:
        parts.append(f"se{_number(args.se_ratio)}")
    if args.fused:
        parts.append("c1")
    if not args.skip:
        parts.append("noskip")
    return "_".join(parts)


def decode_all(block_strings: Iterable[str]) -> List[BlockArgs]:
    """Decodes a list of block strings (one per stage); an empty list is an error."""
    if isinstance(block_strings, str):
        block_strings = [s for s in block_strings.split(",") if s.strip()]
    decoded = [decode(s) for s in block_strings]
    if not decoded:
        raise ValueError("An architecture needs at least one block string; got none.")
    return decoded


def encode_all(args: Sequence[BlockArgs]) -> List[str]:
    return [encode(a) for a in args]
