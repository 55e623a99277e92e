"""The EXIF orientation tag of a JPEG, read from its header (no image decode, no Pillow).

Used only to *report* how many images of a folder are stored rotated: TensorFlow's decoders
ignore the tag, so training and the serving signature both see the pixels as stored.
"""
from __future__ import annotations

import struct
from typing import Iterable, Optional, Tuple

import tensorflow as tf

EXIF_SAMPLE = 200  # JPEG headers read per folder scan (a bounded cost on gs:// too)
_HEADER_BYTES = 65536  # APP1 (where EXIF lives) is at most 64 KiB and comes first
_ORIENTATION_TAG = 0x0112


def exif_orientation(data: bytes) -> Optional[int]:
    """The orientation (1 = upright .. 8) in the JPEG bytes ``data``, or None when absent."""
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no EXIF before the pixels
            return None
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        segment = data[position + 4:position + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            return _tiff_orientation(segment[6:])
        position += 2 + length
    return None


def _tiff_orientation(tiff: bytes) -> Optional[int]:
    if tiff[:2] not in (b"II", b"MM") or len(tiff) < 8:
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    first_ifd = struct.unpack(order + "I", tiff[4:8])[0]
    if first_ifd + 2 > len(tiff):
        return None
    count = struct.unpack(order + "H", tiff[first_ifd:first_ifd + 2])[0]
    for i in range(count):
        entry = first_ifd + 2 + 12 * i
        if entry + 12 > len(tiff):
            return None
        tag, kind = struct.unpack(order + "HH", tiff[entry:entry + 4])
        if tag == _ORIENTATION_TAG and kind == 3:  # SHORT
            return struct.unpack(order + "H", tiff[entry + 8:entry + 10])[0]
    return None


def rotated_fraction(jpeg_paths: Iterable[str]) -> Tuple[int, int]:
    """``(stored rotated or mirrored, read)`` over ``jpeg_paths`` (unreadable files are skipped)."""
    rotated = read = 0
    for path in jpeg_paths:
        try:
            with tf.io.gfile.GFile(path, "rb") as handle:
                orientation = exif_orientation(handle.read(_HEADER_BYTES))
        except (OSError, tf.errors.OpError):
            continue
        read += 1
        rotated += orientation not in (None, 1)
    return rotated, read
