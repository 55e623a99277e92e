"""Input-pipeline throughput at 224 px: our augmentation vs keras-cv / Keras (prints tables).

Part A -- augmentation alone, on decoded 224-px uint8 images in a tf.data map (how the
first measurements of this project were taken): none; RandAugment (2 ops, magnitude 10) ours /
keras-cv / Keras; MixUp (alpha 0.2) and CutMix (alpha 1.0) on batches, ours / keras-cv / Keras.

Part B -- the whole pipeline from JPEG TFRecords (photo-like JPEGs, ~65 KB, 300-450 x 400-520
px, cached in memory so disk does not count):
  (a)  decode + random-resized crop + flip       -- effnet_tf build_dataset, no RandAugment
  (a0) the same decode/crop/flip as one bare map (no corrupt-record guard, no labels)
  (b)  (a) + our RandAugment (2 ops, magnitude 10)               -- build_dataset
  (c)  (a0) + keras_cv.layers.RandAugment per image (2 ops, magnitude 1.0 = 10/10)
  (d)  (a0) + keras.layers.RandAugment per image (2 ops, factor 1.0 = 10/10)
  (e)  (b) + our MixUp (alpha 0.2) on batches                    -- build_dataset
  (e1) (b) + our CutMix (alpha 1.0)                              -- build_dataset

Images/second, batch 32. Every row is measured in ``--rounds`` passes over the rows (fresh
iterator each time, at least 6 batches after 2 warm-up batches) and keeps its best pass: on a
shared machine that is the least disturbed one, and ratios within one run are what to
compare. keras-cv is the `benchmarks` extra (`pip install -e ".[benchmarks]"`). Usage:
  python benchmarks/input_pipeline.py [--seconds 10] [--rounds 2] [--parts A,B] [--rows a,b,c]
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
from effnet_tf.data import mixing, preprocessing, rand_augment  # noqa: E402
from effnet_tf.data.tfrecord_source import write_example  # noqa: E402

SIZE = 224
BATCH = 32
CLASSES = 10


def photo_like(rng, height, width):
    """Multi-octave smooth noise + grain: JPEGs that decode like photos."""
    img = np.zeros((height, width, 3), np.float32)
    for octave, amp in ((4, 70), (16, 35), (64, 18), (256, 8)):
        coarse = rng.normal(0, 1, (max(2, height * octave // 512), max(2, width * octave // 512),
                                   3)).astype(np.float32)
        img += amp * tf.image.resize(coarse[None], [height, width], method="bicubic")[0].numpy()
    img += rng.normal(0, 9, (height, width, 3))
    return np.clip(img + 128, 0, 255).astype(np.uint8)


def timed(it, seconds, min_batches=2):
    """Images/second pulled from iterator ``it`` over at least ``seconds``."""
    start, images, batches = time.perf_counter(), 0, 0
    while batches < min_batches or time.perf_counter() - start < seconds:
        x, _ = next(it)
        images += int(x.shape[0])
        batches += 1
    return images / (time.perf_counter() - start)


def finish(ds, batch_fn=None):
    ds = ds.batch(BATCH, drop_remainder=True)
    if batch_fn is not None:
        ds = ds.map(batch_fn, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1  # as build_dataset does
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


# --- augmenters: per image (uint8 in, uint8 out) and per batch ---------------------------

def ours_randaugment(index, image):
    seed = tf.stack([tf.constant(32, tf.int64), index])
    return rand_augment.randaugment(image, 10.0, seed, num_layers=2)


def keras_cv_randaugment():
    import keras_cv
    layer = keras_cv.layers.RandAugment(value_range=(0, 255), augmentations_per_image=2,
                                        magnitude=1.0, seed=0)
    return lambda index, image: tf.cast(
        tf.clip_by_value(layer(tf.cast(image, tf.float32)), 0, 255), tf.uint8)


def keras_randaugment():
    import keras
    layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=1.0, seed=0)
    return lambda index, image: tf.cast(
        tf.clip_by_value(layer(tf.cast(image, tf.float32)), 0, 255), tf.uint8)


def ours_batch(mixup_alpha, cutmix_alpha):
    counter = tf.Variable(0, dtype=tf.int64)  # only to vary the seed per batch

    def fn(images, labels):
        seed = tf.stack([tf.constant(48, tf.int64), counter.assign_add(1)])
        return mixing.mix_batch(images, labels, mixup_alpha, cutmix_alpha, seed)
    return fn


def library_batch(library, kind):
    if library == "keras_cv":
        import keras_cv
        layer = (keras_cv.layers.MixUp(alpha=0.2, seed=0) if kind == "mixup"
                 else keras_cv.layers.CutMix(alpha=1.0, seed=0))
    else:
        import keras
        layer = (keras.layers.MixUp(alpha=0.2, seed=0) if kind == "mixup"
                 else keras.layers.CutMix(factor=1.0, seed=0))

    def fn(images, labels):
        out = layer({"images": tf.cast(images, tf.float32), "labels": labels})
        return tf.cast(out["images"], tf.bfloat16), out["labels"]
    return fn


# --- part A: augmentation alone on decoded 224-px images --------------------------------

def part_a(rng):
    images = np.stack([photo_like(rng, SIZE, SIZE) for _ in range(128)])
    labels = tf.one_hot(rng.integers(0, CLASSES, len(images)), CLASSES)
    base = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().enumerate()

    def per_image(augment=None):
        def fn(index, element):
            image, label = element
            return (image if augment is None else augment(index, image)), label
        return base.map(fn, num_parallel_calls=tf.data.AUTOTUNE)

    return {
        "A0": ("no augmentation", lambda: finish(per_image())),
        "A1": ("our RandAugment", lambda: finish(per_image(ours_randaugment))),
        "A2": ("keras_cv.layers.RandAugment", lambda: finish(per_image(keras_cv_randaugment()))),
        "A3": ("keras.layers.RandAugment", lambda: finish(per_image(keras_randaugment()))),
        "A4": ("our MixUp", lambda: finish(per_image(), ours_batch(0.2, 0.0))),
        "A5": ("keras_cv.layers.MixUp",
               lambda: finish(per_image(), library_batch("keras_cv", "mixup"))),
        "A6": ("keras.layers.MixUp",
               lambda: finish(per_image(), library_batch("keras", "mixup"))),
        "A7": ("our CutMix", lambda: finish(per_image(), ours_batch(0.0, 1.0))),
        "A8": ("keras_cv.layers.CutMix",
               lambda: finish(per_image(), library_batch("keras_cv", "cutmix"))),
        "A9": ("keras.layers.CutMix",
               lambda: finish(per_image(), library_batch("keras", "cutmix"))),
    }


# --- part B: the whole pipeline from JPEG TFRecords ----------------------------------------

def write_shards(root, n, rng):
    from PIL import Image
    sizes = []
    for shard in range(4):
        with tf.io.TFRecordWriter(os.path.join(root, f"train-{shard:05d}-of-00004")) as w:
            for _ in range(n // 4):
                h, w_ = int(rng.integers(300, 450)), int(rng.integers(400, 520))
                buf = io.BytesIO()
                Image.fromarray(photo_like(rng, h, w_)).save(buf, "JPEG", quality=90)
                sizes.append(len(buf.getvalue()))
                write_example(w, buf.getvalue(), int(rng.integers(0, CLASSES)))
    return float(np.mean(sizes))


def bare_pipeline(source, augment=None):
    """records -> one map (decode, crop, flip[, augment]) -> batch."""
    ds = source.records("train", shuffle=True, seed=0, cache=True).repeat()

    def fn(index, record):
        example = source.decode_record(record)
        seed = tf.stack([tf.constant(16, tf.int64), index])
        image = preprocessing.preprocess_train(example["image"], SIZE, seed, encoded=True)
        if augment is not None:
            image = augment(index, image)
        return image, tf.one_hot(example["label"], CLASSES)

    return finish(ds.enumerate().map(fn, num_parallel_calls=tf.data.AUTOTUNE))


def part_b(source):
    common = dict(split="train", image_size=SIZE, global_batch_size=BATCH, seed=0, cache=True)
    ra = dict(randaug_magnitude=10.0, randaug_layers=2)
    return {
        "a": ("decode + crop + flip (build_dataset)",
              lambda: data.build_dataset(source, randaug_layers=0, **common)),
        "a0": ("decode + crop + flip (bare map)", lambda: bare_pipeline(source)),
        "b": ("(a) + our RandAugment", lambda: data.build_dataset(source, **ra, **common)),
        "c": ("(a0) + keras_cv.layers.RandAugment",
              lambda: bare_pipeline(source, keras_cv_randaugment())),
        "d": ("(a0) + keras.layers.RandAugment",
              lambda: bare_pipeline(source, keras_randaugment())),
        "e": ("(b) + our MixUp", lambda: data.build_dataset(source, mixup_alpha=0.2, **ra,
                                                            **common)),
        "e1": ("(b) + our CutMix", lambda: data.build_dataset(source, cutmix_alpha=1.0, **ra,
                                                              **common)),
    }


def run_rows(title, builders, rows, seconds, rounds, min_batches=6):
    """Best rate of each row over ``rounds`` passes through the rows. Each measurement uses
    a fresh iterator that is deleted afterwards, so no other row's background threads or
    prefilled buffers count; on a shared machine the best pass is the least disturbed one."""
    datasets = {row: builders[row][1]() for row in rows}
    results = {row: 0.0 for row in rows}
    for _ in range(rounds):
        for row in rows:
            it = iter(datasets[row])
            next(it)  # warm-up: tracing, autotune start
            next(it)
            results[row] = max(results[row], timed(it, seconds / rounds, min_batches))
            del it
    print(f"\n{title}\n\n| row | pipeline | img/s |\n|---|---|---:|")
    for row in rows:
        print(f"| {row} | {builders[row][0]} | {results[row]:,.0f} |", flush=True)
    return results


def ratio(results, ours, theirs, label):
    if ours in results and theirs in results:
        print(f"{label}: {results[ours] / results[theirs]:.1f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="JPEGs written for part B")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per row")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the rows")
    parser.add_argument("--parts", default="A,B")
    parser.add_argument("--rows", default="", help="subset of rows, e.g. A0,A1,a,b")
    args = parser.parse_args(argv)
    wanted = set(filter(None, args.rows.split(",")))
    rng = np.random.default_rng(0)
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs; TF {tf.__version__}; "
          f"{SIZE} px, batch {BATCH}; best of {args.rounds} passes of >= "
          f"{args.seconds / args.rounds:g} s and >= 6 batches per row")
    if "A" in args.parts:
        builders = part_a(rng)
        rows = [r for r in builders if not wanted or r in wanted]
        res = run_rows("Part A: augmentation alone (decoded 224-px uint8 images)", builders,
                       rows, args.seconds, args.rounds)
        print()
        ratio(res, "A1", "A2", "our RandAugment / keras-cv")
        ratio(res, "A1", "A3", "our RandAugment / Keras")
        ratio(res, "A4", "A5", "our MixUp / keras-cv")
        ratio(res, "A7", "A8", "our CutMix / keras-cv")
    if "B" in args.parts:
        with tempfile.TemporaryDirectory() as root:
            mean_bytes = write_shards(root, args.images, rng)
            source = data.get_source(f"tfrecord:{root}", num_classes=CLASSES, label_offset=0,
                                     validation_pattern=None)
            builders = part_b(source)
            rows = [r for r in builders if not wanted or r in wanted]
            res = run_rows(f"Part B: JPEG TFRecords -> batches ({args.images} JPEGs, "
                           f"~{mean_bytes / 1024:.0f} KB)", builders, rows, args.seconds,
                           args.rounds)
            print()
            ratio(res, "b", "c", "pipeline with our RandAugment / with keras-cv's")
            ratio(res, "b", "d", "pipeline with our RandAugment / with Keras'")


if __name__ == "__main__":
    main()
