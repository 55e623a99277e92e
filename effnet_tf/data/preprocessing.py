"""Decode, crop, resize and flip one image (graph mode, stateless random ops).

Training: random-resized ("inception") crop from ``sample_distorted_bounding_box`` (area range
per family, aspect 3/4..4/3), resize to the target size, random horizontal flip. On JPEG the
crop window is computed from the header and only that window is decoded
(``decode_and_crop_jpeg``), which saves most of the decode work on large photos.
Evaluation: a central square crop of the shorter side, resized to ``size x size``. By default
(``crop_fraction=None``) the official recipe's ``size / (size + 32)`` below 320 px and the whole
image above; a run's config sets the fraction to match its training crops (``data.eval_crop_fraction``:
a run trained on whole images is evaluated and served on whole images).

Images leave here as uint8 ``[size, size, 3]``: the model normalizes on the device, which
moves 4x fewer bytes host->device than float32.
"""
from __future__ import annotations

import tensorflow as tf

CROP_PADDING = 32
#: At or above this size evaluation resizes the whole image instead of a central crop.
CENTER_CROP_MAX_SIZE = 320
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
WHOLE_IMAGE_BOX = (0.0, 0.0, 1.0, 1.0)


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _resize(image, size: int):
    image = tf.image.resize(image, [size, size], method="bilinear")
    return tf.ensure_shape(_to_uint8(image), [size, size, 3])


def official_crop_fraction(size: int) -> float:
    """The official eval crop: ``size / (size + 32)`` of the shorter side below 320 px, else 1."""
    return size / (size + CROP_PADDING) if size < CENTER_CROP_MAX_SIZE else 1.0


def check_crop_fraction(crop_fraction) -> None:
    if crop_fraction is not None and (isinstance(crop_fraction, bool) or not isinstance(crop_fraction, (int, float))
                                      or not 0.0 < crop_fraction <= 1.0):
        raise ValueError(f"crop_fraction must be None (the official size/(size+32)) or in (0, 1], "
                         f"got {crop_fraction!r}")


def center_crop_window(shape, size: int, crop_fraction=None):
    """``(offset_y, offset_x, h, w)`` of the central square crop of ``shape``: ``crop_fraction``
    of the shorter side (None: the official ``size/(size+32)``, at any size)."""
    height, width = shape[0], shape[1]
    fraction = size / (size + CROP_PADDING) if crop_fraction is None else float(crop_fraction)
    crop = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    crop = tf.maximum(crop, 1)
    return tf.stack([(height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop])


def eval_window(shape, size: int, crop_fraction=None):
    """The evaluation window of ``shape``: the central crop, or the whole image when the fraction
    (None: ``official_crop_fraction(size)``) is 1."""
    fraction = official_crop_fraction(size) if crop_fraction is None else float(crop_fraction)
    if fraction < 1.0:
        return center_crop_window(shape, size, fraction)
    return tf.stack([0, 0, shape[0], shape[1]])


def random_crop_window(shape, seed, area_range, bbox=None, min_object_covered=0.1,
                       size=None, max_attempts: int = 10, crop_fraction=None):
    """Samples a random-resized crop window ``(offset_y, offset_x, h, w)`` of ``shape``.

    ``bbox`` (ymin, xmin, ymax, xmax in [0, 1]) is the region the crop must overlap by at
    least ``min_object_covered`` (the whole image by default). When sampling fails (the
    window is the whole image) this falls back to the evaluation centre crop
    (``crop_fraction``), as the official implementation does.
    """
    box = tf.reshape(tf.constant(WHOLE_IMAGE_BOX) if bbox is None else tf.cast(bbox, tf.float32),
                     [1, 1, 4])
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=box, seed=seed, min_object_covered=min_object_covered,
        aspect_ratio_range=ASPECT_RATIO_RANGE, area_range=area_range,
        max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    failed = tf.reduce_all(tf.equal(window[2:], shape[:2]))
    if size is None:
        return window
    # None: the official fallback, size/(size+32) at every size; else the run's evaluation window.
    fallback = center_crop_window(shape, size) if crop_fraction is None else eval_window(shape, size, crop_fraction)
    return tf.where(failed, fallback, window)


def _decode_any(encoded):
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _crop_decoded(image, window):
    return tf.slice(image, tf.stack([window[0], window[1], 0]), tf.stack([window[2], window[3], 3]))


def _crop_and_resize(image, encoded: bool, window_fn, size: int):
    """Crops ``window_fn(shape)`` out of ``image`` (encoded or uint8) and resizes it."""
    if not encoded:
        return _resize(_crop_decoded(image, window_fn(tf.shape(image))), size)

    def jpeg():
        window = window_fn(tf.image.extract_jpeg_shape(image))
        return _resize(tf.image.decode_and_crop_jpeg(image, window, channels=3), size)

    def other():  # PNG, GIF, BMP: decode all, then crop
        decoded = _decode_any(image)
        return _resize(_crop_decoded(decoded, window_fn(tf.shape(decoded))), size)

    return tf.cond(tf.io.is_jpeg(image), jpeg, other)


def preprocess_train(image, size: int, seed, *, encoded: bool, area_range=(0.05, 1.0),
                     bbox=None, min_object_covered: float = 0.1, flip=True, crop_fraction=None):
    """Random-resized crop + resize to ``size`` + random flip; returns uint8 [size, size, 3].

    A crop that cannot be sampled (e.g. ``area_range=(1, 1)``) falls back to the evaluation
    crop, ``crop_fraction`` of the shorter side (None: the official ``size/(size+32)``).

    ``image`` is encoded bytes (``encoded=True``; JPEG uses decode-and-crop) or uint8
    ``[h, w, 3]``. ``seed`` is a stateless seed (int64 [2]); the crop uses ``seed`` and the
    flip ``seed + (1, 0)``. ``flip``: the probability of a left-right mirror (True: 0.5, the
    recipe's; False or 0: never).
    """
    seed = tf.cast(seed, tf.int64)

    def window_fn(shape):
        return random_crop_window(shape, seed, area_range, bbox=bbox,
                                  min_object_covered=min_object_covered, size=size, crop_fraction=crop_fraction)

    out = _crop_and_resize(image, encoded, window_fn, size)
    probability = 0.5 if flip is True else float(flip)
    if probability > 0:
        coin = tf.random.stateless_uniform([], seed + tf.constant([1, 0], tf.int64))
        out = tf.cond(coin < probability, lambda: tf.reverse(out, [1]), lambda: out)
    return out


def preprocess_eval(image, size: int, *, encoded: bool, crop_fraction=None):
    """Central crop, resized to ``size``; uint8. ``crop_fraction`` of the shorter side, or None
    for the official ``size/(size+32)`` below 320 px and the whole image above."""
    check_crop_fraction(crop_fraction)
    return _crop_and_resize(image, encoded, lambda shape: eval_window(shape, size, crop_fraction), size)
