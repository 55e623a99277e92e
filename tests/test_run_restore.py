"""A training run brought back from its directory: rebuild from config.yaml, restore the
checkpoint with its EMA, export it, and ``effnet-predict`` on a run directory (the real driver,
a few steps on synthetic data; references from tests/test_export.py's helpers)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from effnet_tf import run
from effnet_tf.export import bundle
from test_export import BLOCKS, images, reference_pixels  # noqa: F401  (images is a fixture)



@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from effnet_tf import config as config_lib
    from effnet_tf.run.driver import Driver

    model_dir = str(tmp_path_factory.mktemp("run") / "model_dir")
    config = config_lib.from_dict({
        "model": {"name": None, "blocks": BLOCKS, "width": 0.5, "depth": 0.5},
        "data": {"name": "synthetic", "num_classes": 3, "train_examples": 64, "eval_examples": 16},
        "train": {"epochs": 2, "global_batch_size": 16, "image_size": 32, "ema_decay": 0.9,
                  "base_learning_rate": 0.05, "warmup_epochs": 0},
        "eval": {"image_size": 32, "frequency": "end"},
        "export": {"enabled": False},
        "runtime": {"mode": "train", "model_dir": model_dir, "tensorboard": False, "verbose": 0,
                    "strategy": "default"},
    })
    driver = Driver(config)
    driver.run()
    return driver


def test_export_from_model_dir_uses_the_ema_weights(trained_run, images, tmp_path):
    from effnet_tf.training.ema import ema_weights

    trainer = trained_run
    fraction = trainer.config.data.eval_crop_fraction  # the run's eval crop (1: whole images, a 2-epoch run)
    pixels = np.stack([reference_pixels(data, 32, fraction) for _, data, _ in images])
    with ema_weights(trainer.model) as used:
        assert used
        ema = tf.nn.softmax(trainer.model(pixels, training=False)).numpy()
    raw = tf.nn.softmax(trainer.model(pixels, training=False)).numpy()
    assert np.abs(ema - raw).max() > 1e-3  # the test can tell the two apart

    target = run.export_from_model_dir(trainer.config.runtime.model_dir, str(tmp_path / "export"),
                                          formats=("saved_model",))
    meta = bundle.read_metadata(target)
    assert meta["source"]["checkpoint"].endswith("ckpt-8") and meta["source"]["global_step"] == 8
    assert meta["source"]["ema"] is True
    assert meta["image_size"] == 32 and meta["crop_fraction"] == fraction == 1.0  # the config's eval view
    assert meta["class_names"] == trainer.source.class_names
    loaded = tf.saved_model.load(os.path.join(target, "saved_model"))
    got = loaded.signatures["serving_default"](image_bytes=tf.constant([d for _, d, _ in images]))
    np.testing.assert_allclose(got["probabilities"].numpy(), ema, atol=1e-5)
    # The trainer's model keeps its trained weights (the EMA was swapped back).
    np.testing.assert_allclose(tf.nn.softmax(trainer.model(pixels, training=False)).numpy(), raw, atol=0)


def test_model_dir_without_checkpoint_says_so(tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*empty_run"):
        run.export_from_model_dir(str(empty))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run.export_from_model_dir(str(tmp_path / "missing"))
    assert not (empty / "export").exists()


def test_predict_cli_on_a_training_model_dir(trained_run, images, capsys):
    from effnet_tf.run import predict

    model_dir = trained_run.config.runtime.model_dir
    assert not os.path.exists(os.path.join(model_dir, "export"))
    # No export yet: exported on the fly to a temporary directory (EMA weights).
    assert predict.main(["--model", model_dir, "--json", images[0][0]]) == 0
    on_the_fly = json.loads(capsys.readouterr().out)["results"][0]["predictions"]
    assert not os.path.exists(os.path.join(model_dir, "export"))
    # With an export under model_dir/export it is used as it is.
    run.export_from_model_dir(model_dir, formats=("saved_model",))
    assert predict.main(["--model", model_dir, "--json", images[0][0]]) == 0
    from_export = json.loads(capsys.readouterr().out)["results"][0]["predictions"]
    assert [p["label"] for p in on_the_fly] == [p["label"] for p in from_export]
    np.testing.assert_allclose([p["score"] for p in on_the_fly], [p["score"] for p in from_export], atol=1e-6)


def test_int8_export_from_model_dir_calibrates_on_the_training_split(trained_run, tmp_path):
    """The run's config names the data: calibration reads its training split (eval preprocessing,
    export size); the run's EMA of the BN statistics came back with the checkpoint."""
    trainer = trained_run
    assert trainer.model.optimizer.moving_statistics_pairs  # ema_decay set: statistics averaged too
    target = run.export_from_model_dir(trainer.config.runtime.model_dir, str(tmp_path / "export"),
                                       formats=("tflite_int8",))
    meta = bundle.read_metadata(target)
    assert meta["files"] == {"tflite_int8": "model_int8.tflite"}
    assert meta["tflite_int8"]["input"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
    with open(os.path.join(target, "model_int8.tflite"), "rb") as handle:
        assert handle.read(8)[4:8] == b"TFL3"  # the flatbuffer's file identifier


def test_calibration_images_are_eval_preprocessed_training_images_in_random_order():
    from effnet_tf.data import build_dataset, calibration_images, get_source

    source = get_source("synthetic", num_classes=3, train_examples=24, validation_examples=8)
    reference = np.concatenate([batch.numpy() for batch, _ in build_dataset(
        source, split="train", image_size=32, global_batch_size=8, training=False, drop_remainder=False)])
    got = calibration_images(source, "train", 32, count=10, seed=3)
    assert got.shape == (10, 32, 32, 3) and got.dtype == np.uint8
    # Each is one of the split's eval-preprocessed images, each a different one, not the first ten.
    index = [int(np.flatnonzero((reference == image).all(axis=(1, 2, 3)))[0]) for image in got]
    assert len(set(index)) == 10 and index != list(range(10))
    assert len(calibration_images(source, "train", 32, count=100)) == 24  # the split is smaller
    with pytest.raises(ValueError, match="count must be an int >= 1, got 0"):
        calibration_images(source, "train", 32, count=0)
