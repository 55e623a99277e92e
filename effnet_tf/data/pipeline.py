"""``build_dataset``: one entry point from (source, split, size, batch, augmentation) to batches.

Order of work (per input pipeline / host):

records (cheap keys or encoded bytes; sharded per pipeline, shuffled, optionally cached)
-> repeat (training) -> enumerate (per-element stateless seeds)
-> one parallel map: decode + random-resized crop + resize + flip + RandAugment (uint8)
   (encoded sources: wrapped by the corrupt-record guard, see ``corrupt.py``)
-> label check + one-hot -> batch(per_replica_batch, drop_remainder) -> MixUp/CutMix
   (bfloat16) -> prefetch.

RandAugment runs after the resize, on the small target-size image. All randomness is
stateless and keyed on (seed, input pipeline, element index), so a fixed ``seed`` gives the
same batches on every run.
"""
from __future__ import annotations

import random
from typing import Iterable, Optional, Sequence

import tensorflow as tf

from effnet_tf.data import corrupt, mixing, preprocessing, rand_augment
from effnet_tf.data.buckets import snap_to_bucket
from effnet_tf.data.sources import Source

#: Default bound of the record shuffle buffer (encoded ImageNet JPEGs: ~1.1 GB per host).
DEFAULT_SHUFFLE_BUFFER = 10_000


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"build_dataset: {name} must be a positive int, got {value!r}")
    return value


def _non_negative(name, value):
    if isinstance(value, (tf.Variable, tf.Tensor)):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"build_dataset: {name} must be a number >= 0, got {value!r}")
    return float(value)


def build_dataset(source: Source, split: str = "train", image_size: int = 224,
                  global_batch_size: int = 256, training: bool = True,
                  randaug_magnitude=10.0, randaug_layers: int = 2, mixup_alpha: float = 0.0,
                  cutmix_alpha: float = 0.0, crop_area_min: float = 0.05,
                  seed: Optional[int] = None,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  buckets: Optional[Iterable[int]] = None, drop_remainder: bool = True,
                  shuffle_buffer: Optional[int] = None, cache: bool = False,
                  skip_corrupt: bool = False, *, repeat: Optional[bool] = None,
                  crop_fraction: Optional[float] = None,
                  randaug_ops: Sequence[str] = rand_augment.OPS,
                  randaug_policy: str = "increasing",
                  flip_probability: float = 0.5,
                  num_parallel_calls: int = tf.data.AUTOTUNE,
                  prefetch: int = tf.data.AUTOTUNE) -> tf.data.Dataset:
    """Builds the batched input pipeline of ``split`` of ``source``.

    Args:
      source: a :class:`Source` (see :func:`get_source`).
      split: "train", "validation" (or any split the source knows).
      image_size: output side in pixels; snapped to the nearest of ``buckets`` if given.
      global_batch_size: batch over all replicas; per replica with ``input_context``.
      training: random crop + flip + RandAugment + mixing, shuffled and repeated; else
        central crop / resize only, in order, one pass, and uint8 output.
      randaug_magnitude: RandAugment magnitude on the official 0..10(+) scale; a Python
        number, tensor or ``tf.Variable`` (read every element: changes need no rebuild).
        A Python 0 or ``randaug_layers=0`` disables RandAugment.
      randaug_layers: ops applied per image.
      mixup_alpha, cutmix_alpha: Beta(alpha, alpha) parameters; 0 disables. Either > 0
        makes images bfloat16 (still 0..255) with soft labels.
      crop_area_min: lower end of the random crop's area fraction (0.05 V2, 0.08 V1).
      crop_fraction: the evaluation central crop, as a fraction of the shorter side (1: the
        whole image); also the training crop when none can be sampled. None: the official
        ``size/(size+32)`` below 320 px.
      seed: makes shuffling and augmentation reproducible; None draws a random one.
      input_context: ``tf.distribute.InputContext`` from
        ``strategy.distribute_datasets_from_function``: per-replica batch, per-pipeline
        sharding (files where possible) and per-pipeline augmentation seeds.
      buckets: allowed image sizes (e.g. ``make_buckets()``); None uses ``image_size`` as is.
      drop_remainder: keep every batch the same static size (needed for XLA/TPU).
      shuffle_buffer: record shuffle buffer (default ``min(10_000, examples)``); sources
        with cheap keys (folders, synthetic) shuffle all keys regardless.
      cache: cache encoded records (rendered images for the synthetic source) in memory.
      skip_corrupt: drop undecodable images (reported on stderr with a running count)
        instead of failing with an error that names the shard/file.
      repeat: repeat forever (default: ``training``); the consumer sets steps per epoch.
      randaug_ops: subset of the RandAugment op names.
      flip_probability: the chance that a training image is mirrored left-right (0.5: the recipe's).
      randaug_policy: "increasing" (every op the identity at magnitude 0, rising to the official
        strength at 10; translations relative to the image) or "official" (the official ops
        exactly: see ``effnet_tf.data.rand_augment``).
      num_parallel_calls, prefetch: tf.data parallelism and prefetch depth.

    Returns:
      ``tf.data.Dataset`` of ``(images, labels)``: images ``[B, s, s, 3]`` (static when
      ``drop_remainder``) uint8, or bfloat16 when training with a mixing alpha > 0; labels
      float32 ``[B, num_classes]`` one-hot or soft.
    """
    if not isinstance(source, Source):
        raise ValueError(f"build_dataset: source must be a data Source (see get_source), "
                         f"got {source!r}")
    source.check_split(split)
    image_size = _positive_int("image_size", image_size)
    if buckets is not None:
        image_size = snap_to_bucket(image_size, buckets)
    global_batch_size = _positive_int("global_batch_size", global_batch_size)
    magnitude = _non_negative("randaug_magnitude", randaug_magnitude)
    if (isinstance(randaug_layers, bool) or not isinstance(randaug_layers, int)
            or randaug_layers < 0):
        raise ValueError(
            f"build_dataset: randaug_layers must be an int >= 0, got {randaug_layers!r}")
    mixup_alpha = _non_negative("mixup_alpha", mixup_alpha)
    cutmix_alpha = _non_negative("cutmix_alpha", cutmix_alpha)
    if isinstance(mixup_alpha, (tf.Variable, tf.Tensor)) or isinstance(
            cutmix_alpha, (tf.Variable, tf.Tensor)):
        raise ValueError("build_dataset: mixup_alpha/cutmix_alpha must be Python numbers")
    if not isinstance(crop_area_min, (int, float)) or not 0.0 < crop_area_min <= 1.0:
        raise ValueError(f"build_dataset: crop_area_min must be in (0, 1], got {crop_area_min!r}")
    try:
        preprocessing.check_crop_fraction(crop_fraction)
    except ValueError as error:
        raise ValueError(f"build_dataset: {error}") from None
    rand_augment._check_ops(randaug_ops)
    rand_augment._check_policy(randaug_policy)
    if isinstance(flip_probability, bool) or not isinstance(flip_probability, (int, float)) \
            or not 0.0 <= flip_probability <= 1.0:
        raise ValueError(f"build_dataset: flip_probability must be in [0, 1], got {flip_probability!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"build_dataset: seed must be an int or None, got {seed!r}")

    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(global_batch_size)
        pipeline_id = input_context.input_pipeline_id
    else:
        batch_size, pipeline_id = global_batch_size, 0
    deterministic = seed is not None or not training  # evaluation keeps the source order
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    repeat = training if repeat is None else bool(repeat)
    if shuffle_buffer is None:
        shuffle_buffer = min(DEFAULT_SHUFFLE_BUFFER, source.num_examples(split) or
                             DEFAULT_SHUFFLE_BUFFER)
    shuffle_buffer = _positive_int("shuffle_buffer", shuffle_buffer)

    ds = source.records(split, input_context=input_context, shuffle=training, seed=seed,
                        cache=cache, shuffle_buffer=shuffle_buffer)
    if repeat and not source.encoded:  # encoded sources repeat inside the corrupt-record guard
        ds = ds.repeat()

    # Stateless seeds are Philox keys: element i uses (key, i); distinct keys per pipeline,
    # and the low 4 bits of the key select independent streams (crop/flip, RandAugment, mix).
    key = ((seed % (1 << 35)) * (1 << 20) + pipeline_id % (1 << 20)) * 16

    def stream(index, k):
        return tf.stack([tf.constant(key + k, tf.int64), tf.cast(index, tf.int64)])
    use_randaug = training and randaug_layers > 0 and not (
        isinstance(magnitude, float) and magnitude == 0.0)
    size = image_size

    def process(index, record):
        example = source.decode_record(record)
        if not training:
            image = preprocessing.preprocess_eval(example["image"], size, encoded=source.encoded,
                                                  crop_fraction=crop_fraction)
        else:
            bbox = example.get("bbox")
            image = preprocessing.preprocess_train(
                example["image"], size, stream(index, 0), encoded=source.encoded,
                area_range=(float(crop_area_min), 1.0), bbox=bbox,
                min_object_covered=source.min_object_covered if bbox is not None else 0.1,
                crop_fraction=crop_fraction, flip=flip_probability)
            if use_randaug:
                image = rand_augment.randaugment(image, magnitude, stream(index, 2),
                                                randaug_layers, randaug_ops, policy=randaug_policy)
        return image, tf.cast(example["label"], tf.int64), example["origin"]

    if source.encoded:
        def dummy():
            return (tf.zeros([size, size, 3], tf.uint8), tf.constant(0, tf.int64),
                    tf.constant(""))
        ds = corrupt.guarded_map(ds, process, dummy, skip_corrupt=skip_corrupt, repeat=repeat,
                                 description=f"{source.name} split {split!r}",
                                 num_parallel_calls=num_parallel_calls)
    else:
        ds = ds.enumerate().map(process, num_parallel_calls=num_parallel_calls)

    num_classes = source.num_classes

    def finish(image, label, origin):
        valid = tf.logical_and(label >= 0, label < num_classes)
        check = tf.debugging.Assert(valid, [
            "effnet_tf.data: label", label, "outside [0, num_classes) =", f"[0, {num_classes})",
            "in", origin, "(check data.num_classes / data.label_offset: ImageNet shards store 1..1000,"
            " label_offset 1)"])
        with tf.control_dependencies([check]):
            labels = tf.one_hot(label, num_classes, dtype=tf.float32)
        return image, labels

    ds = ds.map(finish, num_parallel_calls=num_parallel_calls)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if training and (mixup_alpha > 0 or cutmix_alpha > 0):
        def mix(index, batch):
            images, labels = batch
            return mixing.mix_batch(images, labels, mixup_alpha, cutmix_alpha, stream(index, 3))
        ds = ds.enumerate().map(mix, num_parallel_calls=num_parallel_calls)
    ds = ds.prefetch(prefetch)

    options = tf.data.Options()
    options.deterministic = deterministic
    # One thread per element op: the parallelism comes from the parallel map (as in the
    # official TPU input pipelines); this avoids oversubscribing the host CPU.
    options.threading.max_intra_op_parallelism = 1
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options)
