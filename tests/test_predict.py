"""``effnet-predict``: real JPEG/PNG files written by the test, a SavedModel exported here.

References: the SavedModel's own signature called directly, and the known class of each image
(a tiny model trained for a few seconds to name the dominant colour).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import effnet_tf
from effnet_tf import export
from effnet_tf.run import predict

BLOCKS = ["r1_k3_s1_e1_i16_o8_c1", "r1_k3_s2_e4_i8_o16_se0.25"]
CLASS_NAMES = ["red", "green", "blue"]
SIZE = 40


def color_images(rng, n, height, width):
    """Noisy images whose class is the dominant colour channel (0 red, 1 green, 2 blue)."""
    labels = rng.integers(0, 3, n)
    x = rng.integers(0, 110, (n, height, width, 3)).astype(np.int32)
    x[np.arange(n), :, :, labels] += rng.integers(110, 146, (n, 1, 1))
    return np.clip(x, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def trained_model():
    keras.utils.set_random_seed(0)
    model = effnet_tf.build_model(blocks=BLOCKS, width=0.5, depth=0.5, num_classes=3,
                                  dropout_rate=0.0, drop_connect_rate=0.0)
    x, y = color_images(np.random.default_rng(0), 512, SIZE, SIZE)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.5))
    model.fit(x, np.eye(3)[y], batch_size=32, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def export_dir(trained_model, tmp_path_factory):
    model = trained_model
    target = str(tmp_path_factory.mktemp("predict") / "export")
    # top_k=2 exported, so --top_k=3 exercises the fallback to the probabilities.
    export.export_all(model, target, image_size=SIZE, class_names=CLASS_NAMES, top_k=2, report=False,
                      formats=("saved_model",))
    return target


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """A folder of JPEG/PNG files of several sizes (one in a sub-folder) plus a non-image."""
    root = tmp_path_factory.mktemp("photos")
    (root / "more").mkdir()
    rng = np.random.default_rng(1)
    labels = {}
    for i, (h, w, fmt) in enumerate([(50, 70, "jpg"), (64, 48, "png"), (90, 41, "jpg"), (33, 33, "png")]):
        pixels, label = color_images(rng, 1, h, w)
        data = tf.io.encode_jpeg(pixels[0], quality=95) if fmt == "jpg" else tf.io.encode_png(pixels[0])
        path = (root / "more" if i == 3 else root) / f"photo{i}.{fmt}"
        path.write_bytes(data.numpy())
        labels[str(path)] = CLASS_NAMES[int(label[0])]
    (root / "notes.txt").write_text("not an image, and not picked up from a folder")
    return root, labels


def signature_top(export_dir, paths, k):
    loaded = tf.saved_model.load(os.path.join(export_dir, "saved_model"))
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([open(p, "rb").read() for p in paths]))
    probabilities = out["probabilities"].numpy()
    order = np.argsort(-probabilities, axis=1)[:, :k]
    return order, np.take_along_axis(probabilities, order, 1)


def test_json_on_a_folder_matches_the_signature(export_dir, image_dir, capsys):
    root, labels = image_dir
    assert predict.main(["--model", export_dir, "--json", "--top_k", "2", str(root)]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    files = [r["file"] for r in results]
    assert files == sorted(labels)  # recursive, sorted, notes.txt skipped
    order, scores = signature_top(export_dir, files, 2)
    for result, row_order, row_scores in zip(results, order, scores):
        assert [p["index"] for p in result["predictions"]] == list(row_order)
        assert [p["label"] for p in result["predictions"]] == [CLASS_NAMES[i] for i in row_order]
        np.testing.assert_allclose([p["score"] for p in result["predictions"]], row_scores, atol=1e-6)
        assert result["predictions"][0]["label"] == labels[result["file"]]


def test_text_output_and_top_k_beyond_the_export(export_dir, image_dir, capsys):
    root, labels = image_dir
    files = sorted(labels)[:2]
    # The SavedModel returns top-2; top-3 comes from its probabilities and metadata.json's names.
    assert predict.main(["--model", os.path.join(export_dir, "saved_model"), "--top_k", "3", *files]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == files[0] and text[4] == files[1]
    order, scores = signature_top(export_dir, files, 3)
    for line, index, score in zip(text[1:4], order[0], scores[0]):
        rank, label, value = line.split()
        assert label == CLASS_NAMES[index] and abs(float(value) - score) < 1e-4
    assert text[1].split()[1] == labels[files[0]]


def test_bad_files_are_reported_and_the_others_classified(export_dir, image_dir, tmp_path, capsys):
    root, labels = image_dir
    good = sorted(labels)[0]
    fake = tmp_path / "fake.jpg"
    fake.write_text("this is text with a .jpg name")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(sorted(labels)[1], "rb").read()[:70])  # PNG header, body cut off
    status = predict.main(["--model", export_dir, "--json", str(fake), good, str(truncated)])
    assert status == 1
    results = json.loads(capsys.readouterr().out)["results"]
    assert results[0] == {"file": str(fake), "error": "not an image (JPEG, PNG, GIF, BMP, WebP or JPEG XL)"}
    assert results[1]["predictions"][0]["label"] == labels[good]
    assert results[2]["error"].startswith("cannot decode")


def test_tflite_files_in_litert_match_the_saved_model(trained_model, image_dir, tmp_path, capsys):
    """``--model=FILE.tflite``: LiteRT on the serving preprocessing (crop and class names from
    the metadata.json beside it) gives the SavedModel's answers."""
    root, labels = image_dir
    target = str(tmp_path / "export")
    calibration, _ = color_images(np.random.default_rng(7), 64, SIZE, SIZE)
    export.export_all(trained_model, target, image_size=SIZE, class_names=CLASS_NAMES, report=False,
                      formats=("saved_model", "tflite", "tflite_int8"), calibration_images=calibration)
    files = sorted(labels)
    order, scores = signature_top(target, files, 3)
    for name, tolerance in (("model_float32.tflite", 1e-5), ("model_int8.tflite", 0.05)):
        assert predict.main(["--model", os.path.join(target, name), "--json", "--top_k", "3", *files]) == 0
        results = json.loads(capsys.readouterr().out)["results"]
        for result, row_order, row_scores in zip(results, order, scores):
            assert [p["label"] for p in result["predictions"]][0] == CLASS_NAMES[row_order[0]] == labels[result["file"]]
            np.testing.assert_allclose([p["score"] for p in result["predictions"]], row_scores, atol=tolerance)
    not_tflite = tmp_path / "model.tflite"
    not_tflite.write_text("not a flatbuffer")
    assert predict.main(["--model", str(not_tflite), files[0]]) == 2
    assert "is not a TFLite model LiteRT can load" in capsys.readouterr().err


def test_usage_errors_exit_2_with_a_message(export_dir, image_dir, tmp_path, capsys):
    root, labels = image_dir
    image = sorted(labels)[0]
    empty_run = tmp_path / "run"
    (empty_run / "checkpoints").mkdir(parents=True)
    (empty_run / "config.yaml").write_text("model:\n  name: efficientnetv2-b0\n")
    cases = [
        (["--model", str(empty_run), image], "no checkpoint in"),
        (["--model", str(tmp_path / "nowhere"), image], "does not exist"),
        (["--model", str(tmp_path), image], "holds no SavedModel"),
        (["--model", export_dir, str(tmp_path / "missing.jpg")], "does not exist"),
        (["--model", export_dir, str(tmp_path / "run")], "holds no .jpg/.jpeg/.png/.gif/.bmp/.webp/.jxl files"),
    ]
    for argv, message in cases:
        assert predict.main(argv) == 2, argv
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.main(["--model", export_dir, "--top_k", "0", image])


def test_console_script(export_dir, image_dir):
    root, labels = image_dir
    image = sorted(labels)[2]
    script = os.path.join(os.path.dirname(sys.executable), "effnet-predict")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([script, "--model", export_dir, "--json", image], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)["results"][0]
    assert result["file"] == image and result["predictions"][0]["label"] == labels[image]
