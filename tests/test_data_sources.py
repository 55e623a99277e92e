"""Each source end to end: synthetic, TFDS (mock), TFRecord shards and image folders."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from _data_helpers import encode, smooth_image, write_folder
from effnet_tf import data
from effnet_tf.data.synthetic import SHAPES
from effnet_tf.data.tfrecord_source import write_example


def collect(ds):
    images, labels = [], []
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def reference_eval(encoded_or_image, size):
    """Independent eval reference: TF's full decoder, centre crop, bilinear resize."""
    image = encoded_or_image
    if isinstance(image, bytes):
        image = tf.io.decode_image(image, channels=3, expand_animations=False).numpy()
    h, w = image.shape[:2]
    crop = int(size / (size + 32) * min(h, w))
    oy, ox = (h - crop + 1) // 2, (w - crop + 1) // 2
    patch = image[oy:oy + crop, ox:ox + crop].astype(np.float32)
    out = tf.image.resize(patch, [size, size], method="bilinear").numpy()
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------- synthetic

def test_synthetic_source_properties():
    src = data.get_source("synthetic", num_classes=4, train_examples=64, validation_examples=32,
                          seed=3, render_size=48)
    assert src.num_classes == 4 and src.class_names == list(SHAPES[:4])
    assert src.num_examples("train") == 64 and src.num_examples("validation") == 32
    assert not src.encoded
    image, label, bbox = src.example("train", 5)
    assert image.shape == (48, 48, 3) and image.dtype == tf.uint8
    assert 0 <= int(label) < 4
    ymin, xmin, ymax, xmax = bbox.numpy()
    assert 0 <= ymin < ymax <= 1 and 0 <= xmin < xmax <= 1
    # any size, same example
    big, label_big, _ = src.example("train", 5, size=96)
    assert big.shape == (96, 96, 3) and int(label_big) == int(label)


def test_synthetic_deterministic_and_splits_disjoint():
    kw = dict(num_classes=10, train_examples=200, validation_examples=100, render_size=32)
    a = data.get_source("synthetic", seed=1, **kw)
    b = data.get_source("synthetic", seed=1, **kw)
    c = data.get_source("synthetic", seed=2, **kw)
    np.testing.assert_array_equal(a.example("train", 7)[0], b.example("train", 7)[0])
    assert not np.array_equal(a.example("train", 7)[0], c.example("train", 7)[0])

    def hashes(src, split, n):
        ds = build_eval(src, split, n)
        images, labels = collect(ds)
        return {img.tobytes() for img in images}, labels

    train, train_labels = hashes(a, "train", 200)
    val, _ = hashes(a, "validation", 100)
    assert len(train) == 200 and len(val) == 100  # no duplicates within a split
    assert not train & val                         # and no overlap across splits
    counts = np.bincount(train_labels.argmax(1), minlength=10)
    assert counts.min() >= 8  # every class present, roughly balanced (random labels)


def build_eval(src, split, n, size=32):
    return data.build_dataset(src, split, image_size=size, global_batch_size=n,
                              training=False)


def test_synthetic_label_is_shape_not_colour():
    # Mean colour must not predict the class: per-class mean images are all alike.
    src = data.get_source("synthetic", num_classes=3, train_examples=600, render_size=32)
    images, labels = collect(build_eval(src, "train", 600))
    means = np.stack([images[labels.argmax(1) == k].mean(axis=(0, 1, 2)) for k in range(3)])
    assert np.abs(means - means.mean(0)).max() < 12  # out of 255


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match=r"num_classes.*\[2, 14\]"):
        data.get_source("synthetic", num_classes=15)
    with pytest.raises(ValueError, match="train_examples"):
        data.get_source("synthetic", train_examples=0)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        data.get_source("synthetic").num_examples("test")
    with pytest.raises(ValueError, match="keyword"):
        data.get_source("synthetic:foo")


# ------------------------------------------------------------------------- TFDS (mock)

@pytest.mark.parametrize("name,classes,size", [
    ("imagenet2012", 1000, 64), ("oxford_flowers102", 102, 48), ("cifar10", 10, 32)])
def test_tfds_end_to_end(name, classes, size):
    with tfds.testing.mock_data(num_examples=12):
        src = data.get_source(f"tfds:{name}", data_dir="/nonexistent/tfds")
        assert src.num_classes == classes and len(src.class_names) == classes
        assert src.num_examples("train") is None  # no split metadata under the mock
        raw = list(tfds.builder(name, data_dir="/nonexistent/tfds").as_dataset(
            split="train", decoders={"image": tfds.decode.SkipDecoding()}))
        ds = data.build_dataset(src, "train", image_size=size, global_batch_size=4,
                                training=False)
        assert ds.element_spec[0].shape == (4, size, size, 3)
        images, labels = collect(ds)
        assert len(images) == 12
        np.testing.assert_array_equal(labels.argmax(1), [int(r["label"]) for r in raw])
        np.testing.assert_array_equal(labels.sum(1), 1.0)
        for image, r in zip(images[:3], raw):
            ref = reference_eval(r["image"].numpy(), size)
            assert np.abs(image.astype(int) - ref).mean() < 2.0
        train = data.build_dataset(src, "train", image_size=size, global_batch_size=4,
                                   training=True, seed=0, randaug_magnitude=10)
        x, y = next(iter(train))
        assert x.shape == (4, size, size, 3) and x.dtype == tf.uint8 and y.shape == (4, classes)


def test_tfds_errors():
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        data.get_source("tfds:no_such_dataset_xyz")
    src = data.get_source("tfds:cifar10", data_dir="/nonexistent/tfds_dir")
    with pytest.raises(FileNotFoundError, match="cifar10.*/nonexistent/tfds_dir"):
        data.build_dataset(src, "train", image_size=32, global_batch_size=2)


# ------------------------------------------------------------------------- TFRecords

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two train shards (1-based labels; shard 0 holds labels 1-2, shard 1 labels 3-4) and one
    validation shard, with real JPEGs (PIL-encoded) of varying sizes."""
    root = tmp_path_factory.mktemp("tfrecords")
    rng = np.random.default_rng(0)
    content = {}
    for name, labels in (("train-00000-of-00002", (1, 2)), ("train-00001-of-00002", (3, 4)),
                         ("validation-00000-of-00001", (1, 2, 3, 4))):
        rows = []
        with tf.io.TFRecordWriter(str(root / name)) as writer:
            for i in range(6):
                image = smooth_image(rng, 40 + 4 * i, 56 - 2 * i)
                jpeg = encode(image, "jpg")
                label = labels[i % len(labels)]
                write_example(writer, jpeg, label)
                rows.append((jpeg, label))
        content[name] = rows
    return str(root), content


def test_tfrecord_end_to_end(shards):
    root, content = shards
    src = data.get_source(f"tfrecord:{root}", num_classes=4, label_offset=1)
    assert src.num_examples("train") is None and src.num_classes == 4
    assert [os.path.basename(f) for f in src.files("train")] == [
        "train-00000-of-00002", "train-00001-of-00002"]
    ds = data.build_dataset(src, "validation", image_size=32, global_batch_size=3,
                            training=False)
    assert ds.element_spec[0].shape == (3, 32, 32, 3)
    images, labels = collect(ds)
    rows = content["validation-00000-of-00001"]
    np.testing.assert_array_equal(labels.argmax(1), [label - 1 for _, label in rows])
    for image, (jpeg, _) in zip(images, rows):
        # decode-and-crop on the JPEG vs TF's full decode + crop: same pixels up to the
        # decoder's crop-boundary upsampling.
        assert np.abs(image.astype(int) - reference_eval(jpeg, 32)).mean() < 1.5
    train = data.build_dataset(src, "train", image_size=48, global_batch_size=4, seed=1)
    x, y = next(iter(train))
    assert x.shape == (4, 48, 48, 3) and x.dtype == tf.uint8
    assert set(y.numpy().argmax(1)) <= {0, 1, 2, 3}


def test_tfrecord_large_eval_resizes_whole_image(shards):
    root, content = shards
    src = data.get_source(f"tfrecord:{root}", num_classes=4)
    ds = data.build_dataset(src, "validation", image_size=320, global_batch_size=2,
                            training=False)
    images, _ = collect(ds.take(1))
    for image, (jpeg, _) in zip(images, content["validation-00000-of-00001"]):
        ref = tf.image.resize(tf.io.decode_jpeg(jpeg), [320, 320]).numpy()
        assert np.abs(image.astype(float) - np.round(ref)).max() <= 1


def test_tfrecord_files_sharded_per_pipeline(shards):
    root, _ = shards
    src = data.get_source(f"tfrecord:{root}", num_classes=4)
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
        ds = data.build_dataset(src, "train", image_size=32, global_batch_size=4,
                                input_context=ctx, seed=5, repeat=False)
        assert ds.element_spec[0].shape == (2, 32, 32, 3)  # per-replica batch
        _, labels = collect(ds)
        seen.append(set(labels.argmax(1)))
        assert len(labels) == 6
    # one file each: labels 1-2 (0, 1 after the offset) and labels 3-4 (2, 3)
    assert sorted(map(sorted, seen)) == [[0, 1], [2, 3]]


def test_tfrecord_missing_paths(tmp_path, shards):
    root, _ = shards
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        data.get_source(f"tfrecord:{missing}")
    with pytest.raises(FileNotFoundError, match=r"train-\*.*validation-\*"):
        data.get_source(f"tfrecord:{tmp_path}")
    src = data.get_source(f"tfrecord:{root}", validation_pattern="val-????", num_classes=4)
    with pytest.raises(FileNotFoundError, match=r"val-\?\?\?\?"):
        data.build_dataset(src, "validation", image_size=32, global_batch_size=2)


def test_tfrecord_label_out_of_range_named(shards):
    root, _ = shards
    # Forgetting the 1-based offset makes label 4 appear with num_classes=4.
    src = data.get_source(f"tfrecord:{root}", num_classes=4, label_offset=0)
    ds = data.build_dataset(src, "validation", image_size=32, global_batch_size=4,
                            training=False)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)label.*\[0, 4\).*validation-00000-of-00001"):
        collect(ds)


# ------------------------------------------------------------------------- folders

def test_folder_flat_layout(tmp_path):
    rng = np.random.default_rng(1)
    written = write_folder(str(tmp_path), ["tulip", "daisy", "rose"], 5, rng)
    (tmp_path / "daisy" / "notes.txt").write_text("not an image")
    src = data.get_source(f"folder:{tmp_path}", validation_fraction=0.2)
    assert src.class_names == ["daisy", "rose", "tulip"]  # sorted
    train, val = src.files("train"), src.files("validation")
    assert len(val) == 3 and len(train) == 12 and not set(train) & set(val)
    assert src.num_examples("train") == 12
    for path, label in train + val:
        assert src.class_names[label] == os.path.basename(os.path.dirname(path))
        assert written[path][0] == ["tulip", "daisy", "rose"].index(src.class_names[label])
    ds = data.build_dataset(src, "train", image_size=32, global_batch_size=12, training=False)
    images, labels = collect(ds)
    np.testing.assert_array_equal(labels.argmax(1), [label for _, label in train])
    for image, (path, _) in zip(images, train):
        with open(path, "rb") as f:
            ref = reference_eval(f.read(), 32)
        assert np.abs(image.astype(int) - ref).mean() < 1.5
    x, y = next(iter(data.build_dataset(src, "train", image_size=40, global_batch_size=4,
                                        seed=0, mixup_alpha=0.2)))
    assert x.shape == (4, 40, 40, 3) and x.dtype == tf.bfloat16 and y.shape == (4, 3)


def test_folder_reads_every_format_decode_image_reads_and_reports_the_rest(tmp_path):
    """BMP, GIF (first frame), WebP and PNG as the pipeline decodes them against PIL's pixels
    (lossless formats: exact); what is not read is reported by reason; EXIF-rotated JPEGs are
    counted (the orientation is not applied, as in serving)."""
    from PIL import Image

    rng = np.random.default_rng(4)
    expected = {}
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name / "raw").mkdir(parents=True)
        for fmt, extension in (("PNG", "png"), ("BMP", "bmp"), ("WEBP", "webp"), ("GIF", "gif")):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            path = tmp_path / name / f"{fmt.lower()}.{extension}"
            if fmt == "GIF":  # two frames: the first one is the image
                first = Image.fromarray(pixels).quantize(32)
                first.save(path, format="GIF", save_all=True, append_images=[Image.fromarray(255 - pixels).quantize(32)])
                pixels = np.asarray(first.convert("RGB"))
            else:
                Image.fromarray(pixels).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
            expected[str(path)] = pixels
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 CW to display"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / name / "phone.jpg", format="JPEG", exif=exif.tobytes())
        (tmp_path / name / "notes.txt").write_text("x")
        (tmp_path / name / ".DS_Store").write_bytes(b"x")
        (tmp_path / name / "raw" / "x.png").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("x")
    src = data.get_source(f"folder:{tmp_path}", validation_fraction=0.0)
    assert src.num_examples("train") == 10
    report = src.scan_report()
    assert report[0] == f"Folder {tmp_path}: 2 classes; images used: train 10"
    assert report[1] == ("Folder: ignored 1 file(s) beside the class folders (labels.csv); 2 file(s) that are not "
                         "images (.txt) (cat/notes.txt, dog/notes.txt); 2 folder(s) nested in a class folder (not "
                         "read) (cat/raw, dog/raw); 2 hidden file(s) (cat/.DS_Store, dog/.DS_Store)")
    assert report[2].startswith("Folder: 2 of 2 sampled JPEGs are stored rotated (EXIF orientation); it is not applied")
    files = [path for path, _ in src.files("train")]
    ds = data.build_dataset(src, "train", image_size=32, global_batch_size=10, training=False,
                            crop_fraction=1.0)
    images, _ = collect(ds)
    for image, path in zip(images, files):
        if path in expected:
            np.testing.assert_array_equal(image, expected[path], err_msg=path)


def test_exif_orientation_of_both_byte_orders():
    import io

    from PIL import Image

    from effnet_tf.data.exif import exif_orientation

    pixels = np.zeros((8, 8, 3), np.uint8)
    for orientation in (1, 3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif.tobytes())
        assert exif_orientation(buffer.getvalue()) == orientation
    # Big-endian ("MM") TIFF header, written by hand: IFD0 with one SHORT entry (0x0112) = 8.
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x08\x00\x00"
    app1 = b"Exif\x00\x00" + tiff + b"\x00\x00\x00\x00"
    jpeg = b"\xff\xd8" + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + b"\xff\xd9"
    assert exif_orientation(jpeg) == 8
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    assert exif_orientation(buffer.getvalue()) is None and exif_orientation(b"not a jpeg") is None


def test_folder_split_layout(tmp_path):
    rng = np.random.default_rng(2)
    write_folder(str(tmp_path / "train"), ["a", "b"], 3, rng)
    write_folder(str(tmp_path / "validation"), ["b"], 2, rng)
    src = data.get_source(f"folder:{tmp_path}")
    assert src.class_names == ["a", "b"] and src.num_examples("train") == 6
    assert [label for _, label in src.files("validation")] == [1, 1]
    write_folder(str(tmp_path / "validation"), ["zebra"], 1, rng)
    with pytest.raises(ValueError, match="zebra"):
        data.get_source(f"folder:{tmp_path}")


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        data.get_source(f"folder:{tmp_path / 'missing_dir'}")
    rng = np.random.default_rng(3)
    one = tmp_path / "one"
    write_folder(str(one), ["only"], 2, rng)
    with pytest.raises(ValueError, match="at least 2"):
        data.get_source(f"folder:{one}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="at least 2"):
        data.get_source(f"folder:{empty}")
    no_images = tmp_path / "no_images"
    (no_images / "cat").mkdir(parents=True)
    (no_images / "dog").mkdir()
    (no_images / "dog" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"(?s)cat.*no images"):
        data.get_source(f"folder:{no_images}")


def test_get_source_errors():
    with pytest.raises(ValueError, match="'s3:bucket'"):
        data.get_source("s3:bucket")
    with pytest.raises(ValueError, match="folder:"):
        data.get_source("folder:")
