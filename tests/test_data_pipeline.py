"""build_dataset: static shapes, dtypes, determinism, distribution, corrupt records, bad input."""
import os

import numpy as np
import pytest
import tensorflow as tf

from _data_helpers import encode, smooth_image, write_folder
from effnet_tf import data
from effnet_tf.data.tfrecord_source import write_example


@pytest.fixture(scope="module")
def synthetic():
    return data.get_source("synthetic", num_classes=5, train_examples=64,
                           validation_examples=24, seed=0, render_size=40)


def first_batches(ds, n=2):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


@pytest.mark.parametrize("mixup,cutmix,dtype", [
    (0.0, 0.0, tf.uint8), (0.2, 0.0, tf.bfloat16), (0.0, 1.0, tf.bfloat16),
    (0.5, 0.5, tf.bfloat16)])
def test_static_shapes_and_dtype_rule(synthetic, mixup, cutmix, dtype):
    ds = data.build_dataset(synthetic, "train", image_size=32, global_batch_size=8, seed=0,
                            mixup_alpha=mixup, cutmix_alpha=cutmix, randaug_magnitude=15)
    images, labels = ds.element_spec
    assert images.shape == (8, 32, 32, 3) and images.dtype == dtype
    assert labels.shape == (8, 5) and labels.dtype == tf.float32
    x, y = next(iter(ds))
    np.testing.assert_allclose(y.numpy().sum(1), 1.0, atol=1e-6)
    xf = tf.cast(x, tf.float32).numpy()
    assert xf.min() >= 0 and xf.max() <= 255 and xf.max() > 100


def test_eval_is_uint8_finite_and_ordered(synthetic):
    ds = data.build_dataset(synthetic, "validation", image_size=48, global_batch_size=5,
                            training=False, mixup_alpha=0.5)
    assert ds.element_spec[0].shape == (5, 48, 48, 3) and ds.element_spec[0].dtype == tf.uint8
    batches = first_batches(ds, 100)
    assert len(batches) == 24 // 5  # one pass, remainder dropped
    again = first_batches(ds, 100)
    for (a, la), (b, lb) in zip(batches, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    # Eval labels are the source's own labels, in order.
    expected = [int(synthetic.example("validation", i)[1]) for i in range(20)]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]).argmax(1), expected)
    ragged = data.build_dataset(synthetic, "validation", image_size=48, global_batch_size=5,
                                training=False, drop_remainder=False)
    assert sum(len(y) for _, y in first_batches(ragged, 100)) == 24


def test_training_repeats(synthetic):
    ds = data.build_dataset(synthetic, "train", image_size=32, global_batch_size=16, seed=1)
    assert len(first_batches(ds, 10)) == 10  # 160 > 64 examples


def test_buckets_snap_size(synthetic):
    ds = data.build_dataset(synthetic, "train", image_size=45, global_batch_size=4, seed=0,
                            buckets=data.make_buckets(32, 96, 16))
    assert ds.element_spec[0].shape == (4, 48, 48, 3)


@pytest.mark.slow
def test_determinism_with_seed(synthetic):
    kw = dict(image_size=32, global_batch_size=8, randaug_magnitude=10, mixup_alpha=0.2,
              cutmix_alpha=0.2)
    a = first_batches(data.build_dataset(synthetic, "train", seed=7, **kw), 3)
    b = first_batches(data.build_dataset(synthetic, "train", seed=7, **kw), 3)
    c = first_batches(data.build_dataset(synthetic, "train", seed=8, **kw), 3)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_augmentation_changes_images(synthetic):
    kw = dict(image_size=32, global_batch_size=8, seed=3)
    plain = first_batches(data.build_dataset(synthetic, "train", randaug_layers=0, **kw), 1)
    same = first_batches(data.build_dataset(synthetic, "train", randaug_magnitude=0, **kw), 1)
    aug = first_batches(data.build_dataset(synthetic, "train", randaug_magnitude=10, **kw), 1)
    np.testing.assert_array_equal(plain[0][0], same[0][0])  # magnitude 0 disables
    np.testing.assert_array_equal(plain[0][1], aug[0][1])    # same order and labels
    assert not np.array_equal(plain[0][0], aug[0][0])


def check_mirrored_per_replica_batches():
    """Per-replica batches under a 2-device MirroredStrategy (2 logical CPUs)."""
    from effnet_tf import data as data_lib  # re-imported in the subprocess variant

    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, devices
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    assert strategy.num_replicas_in_sync == 2
    source = data_lib.get_source("synthetic", num_classes=5, train_examples=64, render_size=40)

    def dataset_fn(ctx):
        assert ctx.num_replicas_in_sync == 2
        return data_lib.build_dataset(source, "train", image_size=32, global_batch_size=8,
                                      seed=0, input_context=ctx, cutmix_alpha=1.0)

    dist = strategy.distribute_datasets_from_function(dataset_fn)
    x, y = next(iter(dist))
    xs, ys = strategy.experimental_local_results(x), strategy.experimental_local_results(y)
    assert len(xs) == 2
    for xi, yi in zip(xs, ys):
        assert xi.shape == (4, 32, 32, 3) and xi.dtype == tf.bfloat16, xi
        assert yi.shape == (4, 5)
        np.testing.assert_allclose(yi.numpy().sum(1), 1.0, atol=1e-6)
    assert not np.array_equal(tf.cast(xs[0], tf.float32), tf.cast(xs[1], tf.float32))

    @tf.function
    def step(images, labels):
        return strategy.run(lambda a, b: tf.reduce_sum(tf.cast(a, tf.float32)) + tf.reduce_sum(b),
                            args=(images, labels))
    assert len(strategy.experimental_local_results(step(x, y))) == 2


_SUBPROCESS = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path[:0] = [{tests!r}, {root!r}]
import test_data_pipeline
test_data_pipeline.check_mirrored_per_replica_batches()
print("MIRRORED-OK")
"""


def test_mirrored_strategy_per_replica_batches():
    if len(tf.config.list_logical_devices("CPU")) >= 2:
        check_mirrored_per_replica_batches()
        return
    # TensorFlow was initialised with one CPU device before the test could split it: run
    # the same check in a fresh interpreter that splits the CPU into two devices first.
    import subprocess
    import sys
    tests = os.path.dirname(os.path.abspath(__file__))
    code = _SUBPROCESS.format(tests=tests, root=os.path.dirname(tests))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert "MIRRORED-OK" in result.stdout, result.stderr[-3000:]


def test_input_context_shards_synthetic(synthetic):
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(2, pipeline, 4)
        ds = data.build_dataset(synthetic, "validation", image_size=32, global_batch_size=8,
                                training=False, input_context=ctx, drop_remainder=False)
        assert ds.element_spec[0].shape[1:] == (32, 32, 3)
        images = np.concatenate([x for x, _ in first_batches(ds, 100)])
        assert len(images) == 12
        seen.append({img.tobytes() for img in images})
    full = data.build_dataset(synthetic, "validation", image_size=32, global_batch_size=24,
                              training=False)
    everything = {img.tobytes() for img in next(iter(full))[0].numpy()}
    assert not seen[0] & seen[1] and seen[0] | seen[1] == everything


def test_cache_gives_same_eval_data(synthetic, tmp_path):
    plain = first_batches(data.build_dataset(synthetic, "validation", image_size=32,
                                             global_batch_size=8, training=False), 3)
    cached = data.build_dataset(synthetic, "validation", image_size=32, global_batch_size=8,
                                training=False, cache=True)
    for _ in range(2):  # first pass fills the cache, second reads it
        for (a, la), (b, lb) in zip(plain, first_batches(cached, 3)):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(la, lb)
    rng = np.random.default_rng(0)
    write_folder(str(tmp_path), ["a", "b"], 4, rng)
    folder = data.get_source(f"folder:{tmp_path}", validation_fraction=0.0)
    ds = data.build_dataset(folder, "train", image_size=32, global_batch_size=4, seed=0,
                            cache=True, shuffle_buffer=8)
    assert len(first_batches(ds, 5)) == 5


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_size=0), "image_size"), (dict(global_batch_size=2.5), "global_batch_size"),
    (dict(mixup_alpha=-1), "mixup_alpha"), (dict(cutmix_alpha=-0.5), "cutmix_alpha"),
    (dict(randaug_magnitude=-3), "randaug_magnitude"), (dict(randaug_layers=-1), "randaug_layers"),
    (dict(crop_area_min=0.0), "crop_area_min"), (dict(split="test"), "unknown split 'test'"),
    (dict(randaug_ops=("Rotate", "Warp")), "Warp"), (dict(seed="x"), "seed"),
    (dict(shuffle_buffer=0), "shuffle_buffer"),
])
def test_bad_arguments(synthetic, kwargs, match):
    args = dict(split="train", image_size=32, global_batch_size=4)
    args.update(kwargs)
    split = args.pop("split")
    with pytest.raises(ValueError, match=match):
        data.build_dataset(synthetic, split, **args)


def test_bad_source_and_indivisible_batch(synthetic):
    with pytest.raises(ValueError, match="Source"):
        data.build_dataset("synthetic", "train")
    ctx = tf.distribute.InputContext(1, 0, 3)
    with pytest.raises(ValueError):
        data.build_dataset(synthetic, "train", image_size=32, global_batch_size=8,
                           input_context=ctx)


# ------------------------------------------------------------------------- corrupt data

@pytest.fixture()
def corrupt_folder(tmp_path):
    rng = np.random.default_rng(4)
    write_folder(str(tmp_path), ["a", "b"], 3, rng)
    bad = {
        str(tmp_path / "a" / "zz_garbage.jpg"): b"this is not an image",
        # Truncated files, sorted last in their classes; b/zz_truncated.png is the very
        # last record of the split, which exercises the end-of-data check.
        str(tmp_path / "b" / "zz_truncated.png"): encode(smooth_image(rng, 30, 30), "png")[:200],
    }
    for path, payload in bad.items():
        with open(path, "wb") as f:
            f.write(payload)
    return data.get_source(f"folder:{tmp_path}", validation_fraction=0.0), sorted(bad)


@pytest.mark.parametrize("training", (False, True))
def test_corrupt_image_error_names_file(corrupt_folder, training):
    src, bad = corrupt_folder
    ds = data.build_dataset(src, "train", image_size=32, global_batch_size=1,
                            training=training, seed=0, repeat=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for _ in ds:
            pass
    message = str(info.value)
    assert any(path in message for path in bad) and "skip_corrupt" in message


def test_corrupt_last_record_is_noticed(corrupt_folder):
    src, bad = corrupt_folder
    # Only the good files of class a and the truncated last file of class b.
    ds = data.build_dataset(src, "train", image_size=32, global_batch_size=1, training=False,
                            skip_corrupt=True)
    assert sum(1 for _ in ds) == 6


def test_skip_corrupt_reports_count(corrupt_folder, capfd):
    src, bad = corrupt_folder
    ds = data.build_dataset(src, "train", image_size=32, global_batch_size=1, training=False,
                            skip_corrupt=True)
    labels = [int(y.numpy().argmax()) for _, y in ds]
    assert labels == [0, 0, 0, 1, 1, 1]
    err = capfd.readouterr().err
    assert "total skipped: 2" in err
    assert all(path in err for path in bad)
    train = data.build_dataset(src, "train", image_size=32, global_batch_size=4,
                               skip_corrupt=True, seed=0)
    assert len(first_batches(train, 4)) == 4  # keeps going past corrupt records, epoch after epoch


def test_damaged_tfrecord_is_not_silently_swallowed(tmp_path):
    rng = np.random.default_rng(5)
    for shard in range(2):
        with tf.io.TFRecordWriter(str(tmp_path / f"train-{shard}")) as writer:
            for i in range(4):
                write_example(writer, encode(smooth_image(rng, 24, 24), "jpg"), i % 2)
    path = str(tmp_path / "train-1")
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 0xFF  # breaks a record's CRC: the reader stops with DataLossError
    open(path, "wb").write(bytes(raw))
    src = data.get_source(f"tfrecord:{tmp_path}", num_classes=2, label_offset=0,
                          validation_pattern=None)
    ds = data.build_dataset(src, "train", image_size=24, global_batch_size=1, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="unreadable record|corrupt image"):
        for _ in ds:
            pass
    skipping = data.build_dataset(src, "train", image_size=24, global_batch_size=1,
                                  training=False, skip_corrupt=True)
    assert 4 <= sum(1 for _ in skipping) < 8


def test_corrupt_record_in_tfrecord_names_shard(tmp_path):
    rng = np.random.default_rng(6)
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001")) as writer:
        for i in range(3):
            write_example(writer, encode(smooth_image(rng, 24, 24), "jpg"), 1)
        write_example(writer, b"\xff\xd8\xff\xe0 broken jpeg", 2)
    src = data.get_source(f"tfrecord:{tmp_path}", num_classes=2)
    ds = data.build_dataset(src, "train", image_size=24, global_batch_size=1, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"corrupt image in.*train-00000-of-00001 \(record 3\)"):
        for _ in ds:
            pass
