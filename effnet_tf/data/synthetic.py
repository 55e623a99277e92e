"""A built-in synthetic image-classification task that needs no files.

Each example is one filled shape drawn with TensorFlow ops over a pixel grid: the class is the
shape *type* (disk, square, triangle, ring, ...), while its colour, position, size, rotation,
stretch, the background (flat, gradient, stripes, checkerboard or blotches, in two random
colours) and pixel noise are random. Colour and texture carry no class information, so a
model has to learn shape; a small CNN still reaches high accuracy within minutes on a CPU.

Everything is a pure function of ``(seed, split, index)`` via stateless random ops, so
examples render identically in any order, in parallel inside ``tf.data``, at any resolution,
and the validation split never repeats a training example (its random stream differs).

Objects stay inside the image (centre within ±30% of the half-width, radius at most 58%), and
every record carries the object's bounding box: the training crop samples windows that keep at
least ``min_object_covered`` (default 0.5) of that box, so random-resized crops with the
family's small area range rarely cut the object away.
"""
from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf

from effnet_tf.data.sources import TRAIN, VALIDATION, Source, shard_for_pipeline

#: Shape types in class order; a K-class task uses the first K.
SHAPES = ("disk", "square", "triangle", "ring", "plus", "star", "bar", "crescent",
          "two_dots", "frame", "hexagon", "semicircle", "ell", "tee")

_SPLIT_IDS = {TRAIN: 1, VALIDATION: 2}


def _box(x, y, half_w, half_h):
    return tf.maximum(tf.abs(x) - half_w, tf.abs(y) - half_h)


def _length(x, y):
    return tf.sqrt(x * x + y * y)


def _polygon(x, y, sides, apothem):
    angles = [2.0 * math.pi * k / sides + math.pi / 2 for k in range(sides)]
    return tf.reduce_max(
        tf.stack([x * math.cos(a) + y * math.sin(a) for a in angles]), axis=0) - apothem


def _star(x, y):
    # Five petals: radius 0.5 +- 0.4 with the polar angle; not an exact distance, close enough
    # for one-pixel antialiasing.
    return _length(x, y) - (0.52 + 0.4 * tf.cos(5.0 * tf.atan2(y, x)))


# Signed (approximate) distance functions in object-local units; negative inside. Every shape
# fits in the unit disk.
_SDF = {
    "disk": lambda x, y: _length(x, y) - 0.9,
    "square": lambda x, y: _box(x, y, 0.7, 0.7),
    "triangle": lambda x, y: _polygon(x, y, 3, 0.48),
    "ring": lambda x, y: tf.abs(_length(x, y) - 0.68) - 0.22,
    "plus": lambda x, y: tf.minimum(_box(x, y, 0.9, 0.27), _box(x, y, 0.27, 0.9)),
    "star": _star,
    "bar": lambda x, y: _box(x, y, 0.95, 0.27),
    "crescent": lambda x, y: tf.maximum(_length(x, y) - 0.9, 0.72 - _length(x - 0.5, y)),
    "two_dots": lambda x, y: tf.minimum(_length(x - 0.52, y), _length(x + 0.52, y)) - 0.4,
    "frame": lambda x, y: tf.maximum(_box(x, y, 0.78, 0.78), -_box(x, y, 0.45, 0.45)),
    "hexagon": lambda x, y: _polygon(x, y, 6, 0.8),
    "semicircle": lambda x, y: tf.maximum(_length(x, y + 0.3) - 0.9, y - 0.3),
    "ell": lambda x, y: tf.minimum(_box(x + 0.55, y, 0.27, 0.9), _box(x, y - 0.63, 0.8, 0.27)),
    "tee": lambda x, y: tf.minimum(_box(x, y + 0.63, 0.85, 0.27), _box(x, y + 0.1, 0.27, 0.8)),
}


def _colours(u, bright):
    """Three RGB colours in [0,1]^3 from 15 uniforms ``u``: the first with value in the
    bright band if ``bright`` else the dark band, the other two in the opposite band."""
    rgb = tf.reshape(u[:9], [3, 3])
    rgb = rgb / tf.maximum(tf.reduce_max(rgb, axis=1, keepdims=True), 1e-3)
    saturation = u[9:12, None]
    band = tf.stack([bright, tf.logical_not(bright), tf.logical_not(bright)])
    value = tf.where(band, 0.62 + 0.38 * u[12:15], 0.38 * u[12:15])[:, None]
    return value * (1.0 - saturation + saturation * rgb)


_NUM_PARAMS = 24 + 28  # shape/colour parameters + background (3 + a 5x5 blotch grid)


def _background_pattern(kind, u, xx, yy, size):
    """A [size, size] pattern in [0, 1] of the given kind (0..4); ``u``: 28 uniforms."""
    phi = u[0] * (2.0 * math.pi)
    freq = 4.0 + 10.0 * u[1]
    phase = u[2] * (2.0 * math.pi)
    cos, sin = tf.cos(phi), tf.sin(phi)

    def flat():
        return tf.zeros_like(xx)

    def gradient():
        return tf.clip_by_value(0.5 + 0.5 * (xx * cos + yy * sin), 0.0, 1.0)

    def stripes():
        return 0.5 + 0.5 * tf.sin(freq * (xx * cos + yy * sin) + phase)

    def checker():
        along = tf.sin(0.7 * freq * (xx * cos + yy * sin) + phase)
        across = tf.sin(0.7 * freq * (yy * cos - xx * sin))
        return tf.cast(along * across > 0, tf.float32)

    def blotches():
        coarse = tf.reshape(u[3:28], [1, 5, 5, 1])
        return tf.image.resize(coarse, [size, size], method="bicubic")[0, :, :, 0]

    return tf.switch_case(kind, [flat, gradient, stripes, checker, blotches])


def render_example(num_classes, seed, size: int):
    """Renders one example of a ``num_classes``-class task from a stateless ``seed``.

    Returns ``(image, label, bbox)``: uint8 ``[size, size, 3]``, the int32 class (the shape
    type ``SHAPES[label]``) and the object's box ``(ymin, xmin, ymax, xmax)`` in [0, 1].
    Works in graph mode (inside ``tf.data``). Two random-op calls per image: per-op overhead,
    not pixels, dominates the cost at these sizes.
    """
    seed = tf.cast(seed, tf.int64)
    u = tf.random.stateless_uniform([_NUM_PARAMS], seed)
    label = tf.minimum(tf.cast(u[0] * num_classes, tf.int32), num_classes - 1)
    centre = u[1:3] * 0.6 - 0.3  # (x, y)
    radius = 0.3 + 0.2 * u[3]
    stretch = 0.87 + 0.28 * u[4]
    theta = u[5] * (2.0 * math.pi)

    coords = (tf.range(size, dtype=tf.float32) + 0.5) * (2.0 / size) - 1.0
    yy, xx = tf.meshgrid(coords, coords, indexing="ij")
    dx, dy = xx - centre[0], yy - centre[1]
    cos, sin = tf.cos(theta), tf.sin(theta)
    lx = (dx * cos + dy * sin) / (radius * stretch)
    ly = (dy * cos - dx * sin) / (radius / stretch)
    sdf = tf.switch_case(label, [lambda f=_SDF[name]: f(lx, ly) for name in SHAPES[:num_classes]])
    # One-pixel antialiased coverage: local distance * radius ~ global distance.
    alpha = tf.clip_by_value(0.5 - sdf * radius * (size / 2.0), 0.0, 1.0)

    foreground, bg_a, bg_b = tf.unstack(_colours(u[6:21], u[21] < 0.5))
    kind = tf.minimum(tf.cast(u[22] * 5.0, tf.int32), 4)
    pattern = _background_pattern(kind, u[24:], xx, yy, size)
    noise = tf.random.stateless_uniform([size, size], seed + tf.constant([1, 0], tf.int64)) - 0.5
    # image = background * (1 - alpha) + foreground * alpha + grey noise, with background =
    # bg_a + (bg_b - bg_a) * pattern: per pixel, features [1, p, a, p*a, noise] times a
    # [5, 3] colour matrix (one matmul instead of broadcasts over the channel axis).
    features = tf.reshape(tf.stack([tf.ones_like(alpha), pattern, alpha, pattern * alpha, noise]),
                          [5, -1])
    colours = tf.stack([bg_a, bg_b - bg_a, foreground - bg_a, bg_a - bg_b,
                        tf.fill([3], 0.15 * u[23])])  # noise std up to ~0.045
    image = tf.reshape(tf.matmul(features, colours, transpose_a=True), [size, size, 3])
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)

    extent = radius * 1.15  # every shape fits in the (stretched) unit disk
    box = tf.stack([centre[1] - extent, centre[0] - extent, centre[1] + extent,
                    centre[0] + extent])
    bbox = tf.clip_by_value((box + 1.0) / 2.0, 0.0, 1.0)
    return image, label, bbox


class SyntheticSource(Source):
    """The built-in synthetic shapes task (see the module docstring).

    Args:
      num_classes: K, between 2 and ``len(SHAPES)`` (14); class k is ``SHAPES[k]``.
      train_examples, validation_examples: split sizes.
      seed: selects the dataset; the same seed always renders the same examples.
      render_size: base resolution in pixels; the pipeline crops and resizes from it.
      min_object_covered: fraction of the object's box a random training crop must keep.
    """

    encoded = False

    def __init__(self, num_classes: int = 10, train_examples: int = 8192,
                 validation_examples: int = 1024, seed: int = 0, render_size: int = 160,
                 min_object_covered: float = 0.5):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not (
                2 <= num_classes <= len(SHAPES)):
            raise ValueError(
                f"synthetic: num_classes must be an int in [2, {len(SHAPES)}], got {num_classes!r}")
        super().__init__("synthetic", num_classes, SHAPES[:num_classes])
        for name, value in (("train_examples", train_examples),
                            ("validation_examples", validation_examples),
                            ("render_size", render_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"synthetic: {name} must be a positive int, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"synthetic: seed must be an int, got {seed!r}")
        if not 0.0 <= min_object_covered <= 1.0:
            raise ValueError(
                f"synthetic: min_object_covered must be in [0, 1], got {min_object_covered!r}")
        self.seed = seed
        self.render_size = render_size
        self.min_object_covered = float(min_object_covered)
        self._sizes = {TRAIN: train_examples, VALIDATION: validation_examples}

    def num_examples(self, split: str) -> int:
        return self._sizes[self.check_split(split)]

    def _example_seed(self, split_id, index):
        # Stateless seeds are Philox keys: distinct (key, index) pairs give independent
        # streams. The low 4 bits of the key are left free for per-image sub-streams.
        key = (tf.constant(self.seed, tf.int64) * 16 + tf.cast(split_id, tf.int64)) * 16
        return tf.stack([key, tf.cast(index, tf.int64)])

    def _example(self, split_id, index, size):
        image, label, bbox = render_example(self.num_classes,
                                            self._example_seed(split_id, index), size)
        return image, tf.cast(label, tf.int64), bbox

    def example(self, split: str, index, size: Optional[int] = None):
        """Returns ``(image, label, bbox)`` of example ``index`` of ``split`` at ``size`` px."""
        return self._example(_SPLIT_IDS[self.check_split(split)], index,
                             size or self.render_size)

    def records(self, split, *, input_context=None, shuffle=False, seed=None, cache=False,
                shuffle_buffer=1024):
        n = self.num_examples(split)
        split_id = _SPLIT_IDS[split]
        ds = shard_for_pipeline(tf.data.Dataset.range(n), input_context)
        ds = ds.map(lambda i: {"index": i, "split": tf.constant(split_id, tf.int64)})
        if cache:
            # Caching stores rendered images; shuffle those through a bounded buffer.
            ds = ds.map(self.decode_record, num_parallel_calls=tf.data.AUTOTUNE).cache()
            if shuffle:
                ds = ds.shuffle(min(n, shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
            return ds
        if shuffle:  # indices are cheap: shuffle them all, then render in the parallel map
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        return ds

    def decode_record(self, record):
        if "image" in record:  # cached, already rendered
            return record
        index, split_id = record["index"], record["split"]
        image, label, bbox = self._example(split_id, index, self.render_size)
        origin = tf.strings.join(["synthetic/", tf.gather(tf.constant(["?", TRAIN, VALIDATION]),
                                                          split_id), "/",
                                  tf.strings.as_string(index)])
        return {"image": image, "label": label, "bbox": bbox, "origin": origin}
