"""The official RandAugment ops in plain TensorFlow ops (graph mode, ``tf.data``-friendly, no addons).

The op list, argument scale (``MAX_LEVEL = 10``; magnitudes above 10 extrapolate) and fill
value 128 follow the official EfficientNet implementation (``autoaugment.py``). Rotate and
Shear sample nearest neighbours exactly like ``tf.raw_ops.ImageProjectiveTransformV3`` (a test
checks pixel equality) but with one whole-pixel gather, several times faster on a CPU;
Translate moves whole pixels with a pad and a slice, Cutout writes a slice.

Every op takes ``(image uint8 [H, W, 3], magnitude float32 scalar tensor, rand float32 [3])``
where ``rand`` holds uniform [0, 1) numbers (random sign, cutout centre). The magnitude is a
tensor (never baked into the graph as a Python float).

Deliberate deviations from the official code, both for ranges it never exercised:
* ``Contrast`` blends towards the mean grey level, as PIL does; the official code used the
  pixel count / 256 by mistake.
* ``Posterize`` clamps its bit count to [0, 8] so magnitudes up to 25 stay well defined
  (officially ``int(4 * m / 10)`` bits, which exceeds 8 above magnitude 22).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

MAX_LEVEL = 10.0
FILL_VALUE = 128
TRANSLATE_CONST = 100.0
CUTOUT_CONST = 40.0
POLICIES = ("official", "increasing")

#: The official RandAugment op list, in the official order.
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
       "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
       "Cutout", "SolarizeAdd")


def level_fraction(magnitude):
    return tf.cast(magnitude, tf.float32) / MAX_LEVEL


# Speed notes (224 px, one CPU thread): a pass over an image costs ~20-40 us when it is
# elementwise with a scalar, but tf.where (SelectV2), uint8/int32 broadcasting along the
# channel axis and 150k-element gathers each cost ~0.7-1.4 ms. The ops below therefore use
# float arithmetic with scalars or same-shape tensors, masks as multiplications, and
# whole-pixel gathers only where pixels really move.

def random_sign(value, rand):
    """``value`` or ``-value`` with probability 1/2 each (official ``_randomly_negate``)."""
    return tf.where(rand[0] < 0.5, -value, value)  # scalar: cheap


def _to_uint8(x):
    """Clips float pixels to [0, 255] and truncates to uint8 (the official cast)."""
    return tf.cast(tf.minimum(tf.maximum(x, 0.0), 255.0), tf.uint8)


def _blend(degenerate, image_f, factor):
    """``degenerate + factor * (image - degenerate)`` (floats), clipped, truncated to uint8."""
    return _to_uint8(degenerate + factor * (image_f - degenerate))


def _enhance_factor(magnitude):
    return level_fraction(magnitude) * 1.8 + 0.1


def _static_hw(image):
    height, width = image.shape[0], image.shape[1]
    return (height, width) if height is not None and width is not None else None


def _channel_index(image):
    """int32 [H, W, 3] holding the channel number (a constant when the shape is static:
    adding it avoids a slow broadcast along the channel axis)."""
    static = _static_hw(image)
    if static is not None:
        return tf.constant(np.broadcast_to(np.arange(3, dtype=np.int32), static + (3,)))
    return tf.zeros(tf.shape(image), tf.int32) + tf.range(3)


def _grid(image):
    """float32 [H, W] column and row coordinates."""
    static = _static_hw(image)
    if static is not None:
        ys, xs = np.mgrid[0:static[0], 0:static[1]].astype(np.float32)
        return tf.constant(xs), tf.constant(ys)
    shape = tf.shape(image)
    ys, xs = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), indexing="ij")
    return tf.cast(xs, tf.float32), tf.cast(ys, tf.float32)


def _affine(image, transform):
    """Nearest-neighbour affine transform with fill 128, official semantics: output (x, y)
    samples the input at ``(a0 x + a1 y + a2, b0 x + b1 y + b2)`` for
    ``transform = [a0, a1, a2, b0, b1, b2]``.

    Same result as ``tf.raw_ops.ImageProjectiveTransformV3(interpolation="NEAREST",
    fill_mode="CONSTANT", fill_value=128)`` (a test checks this), but the coordinates are
    computed once per pixel (not per channel) and whole pixels are moved by one gather.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    t = tf.unstack(tf.cast(transform, tf.float32))
    xs, ys = _grid(image)
    # +0.5 then floor == std::round (half away from zero) for every in-range coordinate.
    fx = xs * t[0] + ys * t[1] + (t[2] + 0.5)
    fy = xs * t[3] + ys * t[4] + (t[5] + 0.5)
    valid = tf.cast((fx > 0.0) & (fx < w_f) & (fy > 0.0) & (fy < h_f), tf.float32)
    sentinel = h_f * w_f  # index of the appended fill pixel
    index = valid * (tf.floor(fy) * w_f + tf.floor(fx) - sentinel) + sentinel
    pixels = tf.concat([tf.reshape(image, [-1, 3]),
                        tf.fill([1, 3], tf.constant(FILL_VALUE, image.dtype))], axis=0)
    return tf.gather(pixels, tf.cast(index, tf.int32))


def shift_pixels(image, pixels, axis):
    """Translates by ``pixels`` (rounded to whole pixels) along ``axis`` (1 = x, 0 = y),
    filling with 128: a pad and a slice, no per-pixel arithmetic."""
    size = tf.shape(image)[axis]
    shift = tf.cast(tf.math.ceil(pixels - 0.5), tf.int32)  # output x <- input x - shift
    shift = tf.clip_by_value(shift, -size, size)
    before, after = tf.maximum(shift, 0), tf.maximum(-shift, 0)
    paddings = tf.scatter_nd([[axis]], [[before, after]], [3, 2])
    padded = tf.pad(image, paddings, constant_values=FILL_VALUE)
    begin = tf.scatter_nd([[axis]], [after], [3])
    out = tf.slice(padded, begin, tf.shape(image))
    out.set_shape(image.shape)
    return out


# --- pixel ops ---------------------------------------------------------------------------

def invert(image, magnitude=None, rand=None):
    """``255 - image``."""
    del magnitude, rand
    return 255 - image


def _channel_affine(image, matrix):
    """``image @ matrix`` over the channel axis (float32 [H, W, 3]): one [HW, 3] x [3, 3]
    matmul, several times faster than broadcasting per-channel vectors over the image."""
    flat = tf.reshape(tf.cast(image, tf.float32), [-1, 3])
    return tf.reshape(tf.matmul(flat, matrix), tf.shape(image))


def auto_contrast(image, magnitude=None, rand=None):
    """Stretches each channel's [min, max] to [0, 255] (channels with max == min unchanged)."""
    del magnitude, rand
    # Channels-first [3, HW]: per-channel statistics and scaling broadcast over the fast
    # (outer) axis.
    planes = tf.transpose(tf.reshape(tf.cast(image, tf.float32), [-1, 3]))
    lo = tf.reduce_min(planes, axis=1, keepdims=True)
    hi = tf.reduce_max(planes, axis=1, keepdims=True)
    stretch = hi > lo
    scale = tf.where(stretch, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
    offset = tf.where(stretch, lo, 0.0)
    out = tf.reshape(tf.transpose((planes - offset) * scale), tf.shape(image))
    return _to_uint8(out)


def equalize(image, magnitude=None, rand=None):
    """Per-channel histogram equalization with PIL's / the official lookup table."""
    del magnitude, rand
    # One bincount over value * 3 + channel gives all three histograms.
    index = tf.cast(image, tf.int32) * 3 + _channel_index(image)
    hist = tf.transpose(tf.reshape(
        tf.math.bincount(index, minlength=768, maxlength=768), [256, 3]))  # [3, 256]
    # The last non-zero bin is the channel maximum.
    top = tf.cast(tf.reduce_max(tf.reshape(image, [-1, 3]), axis=0), tf.int32)
    last = tf.gather(hist, top, batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - last) // 255
    safe_step = tf.maximum(step, 1)[:, None]
    lut = (tf.cumsum(hist, axis=1) + safe_step // 2) // safe_step
    lut = tf.clip_by_value(tf.concat([tf.zeros([3, 1], tf.int32), lut[:, :-1]], axis=1), 0, 255)
    lut = tf.where(step[:, None] == 0, tf.range(256)[None, :], lut)  # [3, 256]: small
    return tf.gather(tf.reshape(tf.transpose(tf.cast(lut, tf.uint8)), [-1]), index)


def posterize(image, magnitude, rand=None):
    """Keeps the top ``int(4 * m / 10)`` bits (clamped to [0, 8]) of each pixel."""
    del rand
    bits = tf.clip_by_value(tf.cast(tf.floor(level_fraction(magnitude) * 4.0), tf.int32), 0, 8)
    mask = 256 - tf.bitwise.left_shift(1, 8 - bits)  # bits=0 -> 0, bits=8 -> 255
    return tf.bitwise.bitwise_and(image, tf.cast(mask, tf.uint8))


def solarize(image, magnitude, rand=None):
    """Inverts pixels >= threshold ``int(256 * m / 10)``."""
    del rand
    threshold = tf.floor(level_fraction(magnitude) * 256.0)
    x = tf.cast(image, tf.float32)
    return tf.cast(x + tf.cast(x >= threshold, tf.float32) * (255.0 - 2.0 * x), tf.uint8)


def solarize_add(image, magnitude, rand=None):
    """Adds ``int(110 * m / 10)`` to pixels below 128 (clipped to 255)."""
    del rand
    addition = tf.floor(level_fraction(magnitude) * 110.0)
    x = tf.cast(image, tf.float32)
    return tf.cast(tf.minimum(x + tf.cast(x < 128.0, tf.float32) * addition, 255.0), tf.uint8)


def color(image, magnitude, rand=None):
    """Blends with the greyscale image by ``1.8 * m / 10 + 0.1``."""
    del rand
    factor = _enhance_factor(magnitude)
    # grey + f * (x - grey) = x @ (f * I + (1 - f) * G), G's columns all the grey weights.
    grey = tf.tile(tf.constant([[0.2989], [0.587], [0.114]]), [1, 3])
    matrix = factor * tf.eye(3) + (1.0 - factor) * grey
    return _to_uint8(_channel_affine(image, matrix) + 1e-3)


def contrast(image, magnitude, rand=None):
    """Blends with the mean grey level by ``1.8 * m / 10 + 0.1``."""
    del rand
    x = tf.cast(image, tf.float32)
    channel_means = tf.reduce_mean(tf.reshape(x, [-1, 3]), axis=0)
    mean = tf.floor(tf.reduce_sum(channel_means * tf.constant([0.2989, 0.587, 0.114])) + 0.5)
    return _blend(mean, x, _enhance_factor(magnitude))


def brightness(image, magnitude, rand=None):
    """Blends with black by ``1.8 * m / 10 + 0.1``."""
    del rand
    return _to_uint8(tf.cast(image, tf.float32) * _enhance_factor(magnitude))


def sharpness(image, magnitude, rand=None):
    """Blends with a 3x3 smoothed image (border pixels kept) by ``1.8 * m / 10 + 0.1``."""
    del rand
    x = tf.cast(image, tf.float32)
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], padding="VALID")[0]
    smooth = tf.floor(tf.minimum(tf.maximum(smooth, 0.0), 255.0))  # the official uint8 cast
    inner = x[1:-1, 1:-1]
    # Interior: blend(smooth, x); border: blend(x, x) = x. Add the interior change only.
    change = (smooth + _enhance_factor(magnitude) * (inner - smooth)) - inner
    return _to_uint8(x + tf.pad(change, [[1, 1], [1, 1], [0, 0]]))


# --- geometric ops -----------------------------------------------------------------------

def rotate(image, magnitude, rand):
    """Rotates about the centre by ±30° * m / 10 (random sign), filling with 128."""
    degrees = random_sign(level_fraction(magnitude) * 30.0, rand)
    angle = degrees * (math.pi / 180.0)
    shape = tf.cast(tf.shape(image), tf.float32)
    height, width = shape[0], shape[1]
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    return _affine(image, tf.stack([cos, -sin, x_offset, sin, cos, y_offset]))


def shear_x(image, magnitude, rand):
    """Shears x by ±0.3 * m / 10 (random sign): output (x, y) <- input (x + s*y, y)."""
    s = random_sign(level_fraction(magnitude) * 0.3, rand)
    return _affine(image, tf.stack([1.0, s, 0.0, 0.0, 1.0, 0.0]))


def shear_y(image, magnitude, rand):
    """Shears y by ±0.3 * m / 10 (random sign): output (x, y) <- input (x, y + s*x)."""
    s = random_sign(level_fraction(magnitude) * 0.3, rand)
    return _affine(image, tf.stack([1.0, 0.0, 0.0, s, 1.0, 0.0]))


def translate_x(image, magnitude, rand):
    """Shifts right by ±100 * m / 10 pixels (random sign, whole pixels), filling with 128."""
    return shift_pixels(image, random_sign(level_fraction(magnitude) * TRANSLATE_CONST, rand), axis=1)


def translate_y(image, magnitude, rand):
    """Shifts down by ±100 * m / 10 pixels (random sign, whole pixels), filling with 128."""
    return shift_pixels(image, random_sign(level_fraction(magnitude) * TRANSLATE_CONST, rand), axis=0)


def cutout(image, magnitude, rand):
    """Fills a square of half-size ``int(40 * m / 10)`` at a random centre with 128."""
    pad = tf.cast(tf.floor(level_fraction(magnitude) * CUTOUT_CONST), tf.int32)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    centre = tf.cast(rand[1:3] * tf.cast(shape[:2], tf.float32), tf.int32)
    top, left = tf.maximum(centre[0] - pad, 0), tf.maximum(centre[1] - pad, 0)
    bottom = tf.minimum(centre[0] + pad, height)
    right = tf.minimum(centre[1] + pad, width)
    box = tf.fill(tf.stack([bottom - top, right - left, 3]), tf.constant(FILL_VALUE, image.dtype))
    return tf.raw_ops.TensorStridedSliceUpdate(
        input=image, begin=tf.stack([top, left, 0]), end=tf.stack([bottom, right, 3]),
        strides=tf.constant([1, 1, 1]), value=box)
