"""Input-pipeline throughput at 224 px (prints a table; numbers go to BENCHMARKS.md).

Rows (images/second through a tf.data pipeline reading JPEG TFRecords from memory-backed
files, batch 32, on whatever cores this machine has):

  (a)  decode + random-resized crop + flip      -- effnet_tf build_dataset, no RandAugment
  (a0) the same decode/crop/flip as one bare map (no corrupt-record guard, no labels)
  (b)  (a) + our RandAugment (2 ops, magnitude 10)              -- build_dataset
  (c)  (a0) + keras_cv.layers.RandAugment per image (2 ops, magnitude 1.0 = 10/10)
  (d)  (a0) + keras.layers.RandAugment per image (2 ops, factor 1.0 = 10/10)
  (e)  (b) + our MixUp (alpha 0.2) on batches                   -- build_dataset
  (e1) (b) + our CutMix (alpha 1.0)                             -- build_dataset
  (e2) (b) + keras_cv.layers.MixUp (alpha 0.2) on batches instead of ours
  (e3) (b) + keras_cv.layers.CutMix (alpha 1.0) on batches instead of ours

Usage: python benchmarks/input_pipeline.py [--images 256] [--seconds 8] [--rows a,b,c]
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from effnet_tf import data  # noqa: E402
from effnet_tf.data import preprocessing  # noqa: E402
from effnet_tf.data.tfrecord_source import write_example  # noqa: E402

SIZE = 224
BATCH = 32


def photo_like(rng, height, width):
    """Multi-octave smooth noise + grain: JPEG sizes close to ImageNet photos (~100 KB)."""
    img = np.zeros((height, width, 3), np.float32)
    for octave, amp in ((4, 70), (16, 35), (64, 18), (256, 8)):
        coarse = rng.normal(0, 1, (max(2, height * octave // 512), max(2, width * octave // 512),
                                   3)).astype(np.float32)
        img += amp * tf.image.resize(coarse[None], [height, width], method="bicubic")[0].numpy()
    img += rng.normal(0, 9, (height, width, 3))
    return np.clip(img + 128, 0, 255).astype(np.uint8)


def write_shards(root, n, rng):
    from PIL import Image
    sizes = []
    for shard in range(4):
        with tf.io.TFRecordWriter(os.path.join(root, f"train-{shard:05d}-of-00004")) as w:
            for i in range(n // 4):
                h, w_ = int(rng.integers(300, 450)), int(rng.integers(400, 520))
                buf = io.BytesIO()
                Image.fromarray(photo_like(rng, h, w_)).save(buf, "JPEG", quality=90)
                sizes.append(len(buf.getvalue()))
                write_example(w, buf.getvalue(), int(rng.integers(0, 10)))
    return float(np.mean(sizes))


def measure(ds, seconds, min_batches=4):
    it = iter(ds)
    next(it)  # warm-up: tracing, autotune start
    next(it)
    start, images, batches = time.perf_counter(), 0, 0
    while batches < min_batches or time.perf_counter() - start < seconds:
        x, _ = next(it)
        images += int(x.shape[0])
        batches += 1
    return images / (time.perf_counter() - start)


def bare_pipeline(source, augment=None, batch_fn=None):
    """records -> one map (decode, crop, flip[, augment]) -> batch -> [batch_fn]."""
    ds = source.records("train", shuffle=True, seed=0).repeat()

    def fn(index, record):
        example = source.decode_record(record)
        seed = tf.stack([tf.constant(16, tf.int64), index])
        image = preprocessing.preprocess_train(example["image"], SIZE, seed, encoded=True)
        if augment is not None:
            image = augment(image)
        return image, tf.one_hot(example["label"], 10)

    ds = ds.enumerate().map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(BATCH, drop_remainder=True)
    if batch_fn is not None:
        ds = ds.map(batch_fn, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def keras_cv_randaugment():
    import keras_cv
    layer = keras_cv.layers.RandAugment(value_range=(0, 255), augmentations_per_image=2,
                                        magnitude=1.0, seed=0)
    return lambda image: tf.cast(tf.clip_by_value(layer(tf.cast(image, tf.float32)), 0, 255),
                                 tf.uint8)


def keras_randaugment():
    import keras
    layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=1.0, seed=0)
    return lambda image: tf.cast(tf.clip_by_value(layer(tf.cast(image, tf.float32)), 0, 255),
                                 tf.uint8)


def keras_cv_batch(kind, alpha):
    import keras_cv
    layer = (keras_cv.layers.MixUp(alpha=alpha, seed=0) if kind == "mixup"
             else keras_cv.layers.CutMix(alpha=alpha, seed=0))

    def fn(images, labels):
        out = layer({"images": tf.cast(images, tf.float32), "labels": labels})
        return tf.cast(out["images"], tf.bfloat16), out["labels"]
    return fn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="JPEGs written (4 shards)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per row")
    parser.add_argument("--rows", default="a,a0,b,c,d,e,e1,e2,e3")
    args = parser.parse_args(argv)
    rows = args.rows.split(",")

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        mean_bytes = write_shards(root, args.images, rng)
        source = data.get_source(f"tfrecord:{root}", num_classes=10, label_offset=0,
                                 validation_pattern=None)
        common = dict(split="train", image_size=SIZE, global_batch_size=BATCH, seed=0,
                      cache=True)
        ours_ra = dict(randaug_magnitude=10.0, randaug_layers=2)
        builders = {
            "a": ("decode + crop + flip (build_dataset)",
                  lambda: data.build_dataset(source, randaug_layers=0, **common)),
            "a0": ("decode + crop + flip (bare map)", lambda: bare_pipeline(source)),
            "b": ("(a) + our RandAugment (2 ops, m=10)",
                  lambda: data.build_dataset(source, **ours_ra, **common)),
            "c": ("(a0) + keras_cv.layers.RandAugment",
                  lambda: bare_pipeline(source, keras_cv_randaugment())),
            "d": ("(a0) + keras.layers.RandAugment",
                  lambda: bare_pipeline(source, keras_randaugment())),
            "e": ("(b) + our MixUp (alpha 0.2)",
                  lambda: data.build_dataset(source, mixup_alpha=0.2, **ours_ra, **common)),
            "e1": ("(b) + our CutMix (alpha 1.0)",
                   lambda: data.build_dataset(source, cutmix_alpha=1.0, **ours_ra, **common)),
            "e2": ("(b) + keras_cv.layers.MixUp (alpha 0.2)",
                   lambda: data.build_dataset(source, **ours_ra, **common).map(
                       keras_cv_batch("mixup", 0.2), num_parallel_calls=tf.data.AUTOTUNE)),
            "e3": ("(b) + keras_cv.layers.CutMix (alpha 1.0)",
                   lambda: data.build_dataset(source, **ours_ra, **common).map(
                       keras_cv_batch("cutmix", 1.0), num_parallel_calls=tf.data.AUTOTUNE)),
        }
        unknown = [r for r in rows if r not in builders]
        if unknown:
            parser.error(f"unknown rows {unknown}; choose from {list(builders)}")
        print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs; TF {tf.__version__}; {args.images} JPEGs of "
              f"~{mean_bytes / 1024:.0f} KB (300-450 x 400-520 px), cached in memory; "
              f"{SIZE} px, batch {BATCH}")
        results = {}
        print(f"| row | pipeline | img/s |\n|---|---|---:|")
        for row in rows:
            name, build = builders[row]
            results[row] = measure(build(), args.seconds)
            print(f"| {row} | {name} | {results[row]:,.0f} |", flush=True)
        if "b" in results and "c" in results:
            print(f"\nours / keras-cv RandAugment: {results['b'] / results['c']:.1f}x")
        if "b" in results and "d" in results:
            print(f"ours / keras RandAugment: {results['b'] / results['d']:.1f}x")


if __name__ == "__main__":
    main()
