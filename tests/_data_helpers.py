"""Shared helpers for the tests/test_data_*.py files (writing real JPEG/PNG/TFRecord data)."""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image


def smooth_image(rng, height, width):
    """A photo-like uint8 image: smooth colour gradients plus mild noise (JPEG-friendly)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        channels.append(128 + 60 * np.sin(a * xx / 9 + b * yy / 11 + c * 6))
    image = np.stack(channels, -1) + rng.normal(0, 4, (height, width, 3))
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def encode(image: np.ndarray, fmt: str) -> bytes:
    """Encodes with PIL (an encoder independent of TensorFlow)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format={"jpg": "JPEG", "png": "PNG"}[fmt], quality=95)
    return buf.getvalue()


def write_folder(root, classes, per_class, rng, size=(40, 48), fmts=("jpg", "png")):
    """Writes root/<class>/<i>.<fmt> images; returns {path: (label, image)}."""
    written = {}
    for label, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            fmt = fmts[i % len(fmts)]
            image = smooth_image(rng, *size)
            path = os.path.join(root, name, f"img{i:03d}.{fmt}")
            with open(path, "wb") as f:
                f.write(encode(image, fmt))
            written[path] = (label, image)
    return written
