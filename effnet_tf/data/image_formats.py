"""The encoded image formats effnet_tf reads: those ``tf.io.decode_image`` decodes in TensorFlow
2.21 (JPEG, PNG, GIF, BMP, WebP, JPEG XL), by file extension (folders, ``effnet-predict``) and by
magic bytes (the serving signature's check, so a bad element is named before the decoder fails).
Training, evaluation, the exported ``serving_default`` and ``effnet-predict`` share this list.
"""
from __future__ import annotations

import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".jxl")
FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP or JPEG XL"

# (offset, bytes) signatures; a format matches when all of its parts do.
MAGIC = {
    "JPEG": ((0, b"\xff\xd8\xff"),),
    "PNG": ((0, b"\x89PNG\r\n\x1a\n"),),
    "GIF": ((0, b"GIF8"),),
    "BMP": ((0, b"BM"),),
    "WebP": ((0, b"RIFF"), (8, b"WEBP")),
    "JPEG XL": ((0, b"\xff\x0a"),),
    "JPEG XL container": ((0, b"\x00\x00\x00\x0cJXL \r\n\x87\n"),),
}


def looks_like_image(data: bytes) -> bool:
    """True when ``data`` starts like a file of one of the formats (the serving graph's check)."""
    return any(all(data[at:at + len(part)] == part for at, part in parts) for parts in MAGIC.values())


def is_image_tensor(encoded: tf.Tensor) -> tf.Tensor:
    """``looks_like_image`` in the graph, for one scalar string."""
    # Zero padding keeps substr in range on short strings (no signature is all zeros).
    padded = tf.strings.join([encoded, tf.constant(b"\0" * 16)])
    matches = [tf.reduce_all([tf.equal(tf.strings.substr(padded, at, len(part)), part) for at, part in parts])
               for parts in MAGIC.values()]
    return tf.reduce_any(tf.stack(matches))
