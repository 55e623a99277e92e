"""RandAugment: ``num_layers`` layers each pick one op uniformly at random and always apply it
(the official EfficientNet scheme). The ops themselves are in ``augment_ops.py``; here are the
two policies over them, the op tables and ``randaugment``/``apply_op``. All randomness comes
from one stateless draw per image: a fixed seed gives identical images in any ``tf.data``
ordering, and the per-op overhead (which dominates at these image sizes) stays small.

Two policies (``policy=``):

* ``"official"``: the official ops exactly. Their strength is not monotonic in the magnitude:
  at low magnitudes Posterize keeps 0 bits (a black image), Solarize inverts every pixel and
  Brightness/Contrast/Color blend 90% towards black/grey (factor ``1.8 m/10 + 0.1``), and
  Translate (100 px) and Cutout (40 px) are absolute, so on a 64-px image magnitude 10 moves
  the image out of the frame. Use it to reproduce the published ImageNet recipe.
* ``"increasing"`` (the default of ``effnet-train``): every op grows from the identity at
  magnitude 0 to the official op's strength at 10, as the RandAugment paper intends (timm's
  "increasing" ops): enhance factors ``1 ± 0.9 m/10``, Posterize keeps ``8 - 4 m/10`` bits,
  Solarize's threshold falls from 256 to 0, the magnitude-free ops (AutoContrast, Equalize,
  Invert) apply with probability ``m/10``, and Translate (45% of the side at 10) and Cutout
  (half-size 18% of the side: 40 px at 224) are relative to the image. Scaling the magnitude
  down then scales the augmentation down, which the budget rule relies on.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import tensorflow as tf

from effnet_tf.data.augment_ops import (  # noqa: F401  (FILL_VALUE, MAX_LEVEL: part of this module's API)
    CUTOUT_CONST,
    FILL_VALUE,
    MAX_LEVEL,
    OPS,
    POLICIES,
    auto_contrast,
    brightness,
    color,
    contrast,
    cutout,
    equalize,
    invert,
    level_fraction,
    posterize,
    random_sign,
    rotate,
    sharpness,
    shear_x,
    shear_y,
    shift_pixels,
    solarize,
    solarize_add,
    translate_x,
    translate_y,
)

#: "increasing" policy: translation and cutout half-size as fractions of the side at magnitude 10.
TRANSLATE_FRACTION = 0.45
CUTOUT_FRACTION = CUTOUT_CONST / 224.0


# --- the "increasing" policy: identity at magnitude 0 ----------------------------------------

def _increasing_factor(magnitude, rand):
    return 1.0 + random_sign(tf.minimum(level_fraction(magnitude), 1.0) * 0.9, rand)


def _with_probability(fn):
    """A magnitude-free op applied with probability ``min(1, m / 10)`` (drawn from ``rand[1]``)."""
    def op(image, magnitude, rand):
        return tf.cond(rand[1] < level_fraction(magnitude), lambda: fn(image), lambda: tf.identity(image))
    return op


def posterize_increasing(image, magnitude, rand=None):
    """Keeps the top ``8 - round(4 * m / 10)`` bits: all of them at 0, 4 at 10 and above."""
    del rand
    bits = 8 - tf.cast(tf.round(tf.minimum(level_fraction(magnitude), 1.0) * 4.0), tf.int32)
    mask = 256 - tf.bitwise.left_shift(1, 8 - bits)
    return tf.bitwise.bitwise_and(image, tf.cast(mask, tf.uint8))


def solarize_increasing(image, magnitude, rand=None):
    """Inverts pixels >= ``256 - int(256 * m / 10)``: none at 0, all at 10."""
    del rand
    threshold = 256.0 - tf.floor(level_fraction(magnitude) * 256.0)
    x = tf.cast(image, tf.float32)
    return tf.cast(x + tf.cast(x >= threshold, tf.float32) * (255.0 - 2.0 * x), tf.uint8)


def _enhance_increasing(op):
    """``op`` (color/contrast/brightness/sharpness) with the factor ``1 ± 0.9 m/10``."""
    def increasing(image, magnitude, rand):
        # The official ops take the factor as (m / 10) * 1.8 + 0.1: invert that mapping.
        factor = _increasing_factor(magnitude, rand)
        return op(image, (factor - 0.1) / 1.8 * MAX_LEVEL, rand)
    return increasing


def translate_x_relative(image, magnitude, rand):
    """Shifts right by ±45% of the width * m / 10 (random sign, whole pixels), filling with 128."""
    width = tf.cast(tf.shape(image)[1], tf.float32)
    return shift_pixels(image, random_sign(level_fraction(magnitude) * TRANSLATE_FRACTION * width, rand), axis=1)


def translate_y_relative(image, magnitude, rand):
    """Shifts down by ±45% of the height * m / 10 (random sign, whole pixels), filling with 128."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    return shift_pixels(image, random_sign(level_fraction(magnitude) * TRANSLATE_FRACTION * height, rand), axis=0)


def cutout_relative(image, magnitude, rand):
    """Cutout whose half-size is 18% of the shorter side * m / 10 (40 px at 224 px, m = 10)."""
    side = tf.cast(tf.reduce_min(tf.shape(image)[:2]), tf.float32)
    return cutout(image, magnitude * CUTOUT_FRACTION * side / CUTOUT_CONST, rand)


NAME_TO_OP: Dict[str, Callable] = {
    "AutoContrast": auto_contrast, "Equalize": equalize, "Invert": invert, "Rotate": rotate,
    "Posterize": posterize, "Solarize": solarize, "Color": color, "Contrast": contrast,
    "Brightness": brightness, "Sharpness": sharpness, "ShearX": shear_x, "ShearY": shear_y,
    "TranslateX": translate_x, "TranslateY": translate_y, "Cutout": cutout,
    "SolarizeAdd": solarize_add,
}


#: The "increasing" policy's ops (the others are the official ones).
INCREASING_OPS: Dict[str, Callable] = dict(
    NAME_TO_OP,
    AutoContrast=_with_probability(lambda image: auto_contrast(image)),
    Equalize=_with_probability(lambda image: equalize(image)),
    Invert=_with_probability(lambda image: invert(image)),
    Posterize=posterize_increasing, Solarize=solarize_increasing,
    Color=_enhance_increasing(color), Contrast=_enhance_increasing(contrast),
    Brightness=_enhance_increasing(brightness), Sharpness=_enhance_increasing(sharpness),
    TranslateX=translate_x_relative, TranslateY=translate_y_relative, Cutout=cutout_relative,
)
_POLICY_OPS = {"official": NAME_TO_OP, "increasing": INCREASING_OPS}


def _check_policy(policy: str) -> Dict[str, Callable]:
    if policy not in _POLICY_OPS:
        raise ValueError(f"RandAugment: unknown policy {policy!r}; allowed: {list(POLICIES)}")
    return _POLICY_OPS[policy]


def _check_ops(ops: Sequence[str]):
    ops = tuple(ops)
    unknown = [o for o in ops if o not in NAME_TO_OP]
    if unknown or not ops:
        raise ValueError(f"RandAugment: unknown ops {unknown or ops!r}; allowed: {list(OPS)}")
    return ops


def apply_op(image, name: str, magnitude, seed=(0, 0), policy: str = "official"):
    """Applies the RandAugment op ``name`` at ``magnitude`` to uint8 ``image`` [H, W, 3].

    ``seed`` (stateless, int [2]) draws the op's random sign / cutout centre / whether a
    magnitude-free op applies ("increasing" policy)."""
    _check_ops([name])
    table = _check_policy(policy)
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"RandAugment expects uint8 images, got {image.dtype.name}")
    rand = tf.random.stateless_uniform([3], tf.convert_to_tensor(seed))
    out = table[name](image, tf.cast(magnitude, tf.float32), rand)
    out.set_shape(image.shape)
    return out


def randaugment(image, magnitude, seed, num_layers: int = 2, ops: Sequence[str] = OPS,
                policy: str = "official"):
    """Applies ``num_layers`` uniformly chosen ops from ``ops`` at ``magnitude``.

    Args:
      image: uint8 ``[H, W, 3]`` (graph or eager).
      magnitude: scalar (Python number, tensor or ``tf.Variable``), on the official 0..10
        scale; larger values extrapolate (V2 uses up to 20, magnitude 25 works).
      seed: stateless seed, int ``[2]``.
      num_layers: number of ops applied in sequence.
      ops: subset of :data:`OPS` to choose from.
      policy: "official" (the official ops) or "increasing" (identity at magnitude 0; see the
        module docstring).
    Returns:
      uint8 image with the static shape of ``image``.
    """
    ops = _check_ops(ops)
    table = _check_policy(policy)
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
        raise ValueError(f"RandAugment: num_layers must be an int >= 0, got {num_layers!r}")
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"RandAugment expects uint8 images, got {image.dtype.name}")
    if isinstance(magnitude, (int, float)) and magnitude < 0:
        raise ValueError(f"RandAugment: magnitude must be >= 0, got {magnitude!r}")
    magnitude = tf.cast(magnitude, tf.float32)
    static_shape = image.shape
    if num_layers == 0:
        return image
    rand = tf.random.stateless_uniform([num_layers, 4], tf.convert_to_tensor(seed))
    for layer in range(num_layers):
        choice = tf.minimum(tf.cast(rand[layer, 0] * len(ops), tf.int32), len(ops) - 1)
        op_rand = rand[layer, 1:]
        branches = [lambda fn=table[name]: fn(image, magnitude, op_rand) for name in ops]
        image = tf.switch_case(choice, branches)
        image.set_shape(static_shape)
    return image
