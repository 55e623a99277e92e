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


# Runs exported files in their own runtimes, in a process that refuses to import what they must
# not need. "tensorflow": the SavedModel with effnet_tf refused, then the .keras file, whose
# layers are effnet_tf's, with the refusal lifted. "alone": the .tflite files in LiteRT and the
# .onnx file in ONNX Runtime, with effnet_tf, TensorFlow and Keras refused throughout.
RUNTIME_SCRIPT = """
import json, sys
import numpy as np

mode, spec = sys.argv[1], json.loads(sys.argv[2])
forbidden = {"tensorflow": {"effnet_tf"}, "alone": {"effnet_tf", "tensorflow", "keras"}}[mode]

class Forbid:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in forbidden:
            raise ImportError(name + " must not be imported here")
        return None

sys.meta_path.insert(0, Forbid())

def saved_model(path):
    import tensorflow as tf
    signature = tf.saved_model.load(path).signatures["predict_pixels"]
    return lambda pixels: signature(pixels=tf.constant(pixels, tf.float32))["probabilities"].numpy()

def keras_file(path):
    forbidden.clear()
    import keras
    import effnet_tf  # registers the layers the file names (keras imports only its own packages)
    model = keras.saving.load_model(path)
    return lambda pixels: keras.ops.convert_to_numpy(keras.ops.softmax(model(pixels.astype("float32"), training=False)))

def tflite(path):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(pixels):
        interpreter.resize_tensor_input(source["index"], list(pixels.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], pixels.astype(source["dtype"]))  # float32, or uint8 (scale 1)
        interpreter.invoke()
        probabilities = interpreter.get_tensor(target["index"]).astype(np.float32)
        scale, zero_point = target["quantization"]
        return (probabilities - zero_point) * scale if scale else probabilities
    return run

def onnx(path):
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    results["onnx_inputs"] = [[i.name, [d if isinstance(d, int) else None for d in i.shape]]
                              for i in session.get_inputs()]
    return lambda pixels: session.run(["probabilities"], {"pixels": pixels.astype(np.float32)})[0]

results = {}
for key, runtime, path, batches in spec:
    run = {"saved_model": saved_model, "keras": keras_file, "tflite": tflite, "onnx": onnx}[runtime](path)
    results[key] = {"probabilities": [run(np.load(name)).tolist() for name in batches],
                    "effnet_tf": sorted(m for m in sys.modules if m.split(".")[0] == "effnet_tf")}
print(json.dumps(results))
"""

# What each file may differ from the Keras model by (probabilities): float files only by float
# rounding; dynamic range by its int8 weights; full integer by int8 activations and an output
# step of 1/256 (measured by the report on this run: 1e-7 for every float file, 0.0012, 0.0037).
RUNTIME_TOLERANCE = {"saved_model": 1e-5, "keras": 1e-5, "tflite_float32": 1e-5, "tflite_dynamic_range": 0.01,
                     "tflite_int8": 0.03, "onnx": 1e-4}


@pytest.mark.slow
def test_every_format_of_a_run_export_runs_alone_in_its_own_runtime(trained_run, images, tmp_path):
    """The export of a trained run, every format: each file runs in a fresh process that imports
    only its runtime (TensorFlow, Keras + effnet_tf's layers, LiteRT, ONNX Runtime) and gives the
    Keras model's (EMA) probabilities; the export report checked each one the same way. The int8
    file is calibrated on the run's training split (the config names the data) and the ONNX file
    takes any batch and image size."""
    import sys

    from effnet_tf.training.ema import ema_weights
    from test_export import _run

    trainer = trained_run
    assert trainer.model.optimizer.moving_statistics_pairs  # ema_decay set: statistics averaged too
    fraction = trainer.config.data.eval_crop_fraction
    pixels = np.stack([reference_pixels(data, 32, fraction) for _, data, _ in images])
    other_size = np.random.default_rng(2).integers(0, 256, (2, 48, 40, 3)).astype(np.uint8)
    with ema_weights(trainer.model):
        expected = tf.nn.softmax(trainer.model(pixels, training=False)).numpy()
        expected_other_size = tf.nn.softmax(trainer.model(other_size, training=False)).numpy()
    target = run.export_from_model_dir(trainer.config.runtime.model_dir, str(tmp_path / "export"),
                                       formats=("saved_model", "keras", "tflite", "tflite_int8", "onnx"))
    meta = bundle.read_metadata(target)
    assert meta["files"] == {"saved_model": "saved_model", "keras": "model.keras",
                             "tflite_float32": "model_float32.tflite",
                             "tflite_dynamic_range": "model_dynamic_range.tflite",
                             "tflite_int8": "model_int8.tflite", "onnx": "model.onnx"}
    assert meta["tflite_int8"]["input"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
    with open(os.path.join(target, "model_int8.tflite"), "rb") as handle:
        assert handle.read(8)[4:8] == b"TFL3"  # the flatbuffer's file identifier
    assert meta["onnx"]["max_abs_difference"] <= 1e-4 and meta["onnx"]["checked_images"] == 32
    assert meta["onnx"]["opset"] == 17 and meta["onnx"]["dynamic_axes"] == ["batch", "height", "width"]
    np.save(tmp_path / "pixels.npy", pixels)
    np.save(tmp_path / "other_size.npy", other_size)
    batches = [str(tmp_path / "pixels.npy")]
    processes = {"tensorflow": [], "alone": []}
    for key, relative in meta["files"].items():  # saved_model before keras: the order export_all writes
        runtime = key.split("_")[0] if key.startswith("tflite") else key
        extra = [str(tmp_path / "other_size.npy")] if key == "onnx" else []
        processes["tensorflow" if key in ("saved_model", "keras") else "alone"].append(
            [key, runtime, os.path.join(target, relative), batches + extra])
    results = {}
    for mode, spec in processes.items():
        proc = _run([sys.executable, "-c", RUNTIME_SCRIPT, mode, json.dumps(spec)], cwd=str(tmp_path))
        assert proc.returncode == 0, (mode, proc.stderr[-3000:])
        results.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert set(results) - {"onnx_inputs"} == set(meta["files"])
    for key in meta["files"]:
        result = results[key]
        np.testing.assert_allclose(result["probabilities"][0], expected, atol=RUNTIME_TOLERANCE[key], err_msg=key)
        if key == "keras":  # the layers, nothing of the training or export code
            assert {m.split(".")[1] for m in result["effnet_tf"] if "." in m} == {"blocks", "model"}
        else:
            assert result["effnet_tf"] == []
    # ONNX: dynamic batch and size, 2 images of 48 x 40 as well.
    assert results["onnx_inputs"] == [["pixels", [None, None, None, 3]]]
    np.testing.assert_allclose(results["onnx"]["probabilities"][1], expected_other_size, atol=1e-4)
    # The report ran every file in the same runtimes, on the calibration images.
    report = meta["report"]
    assert set(report["files"]) == set(meta["files"]) and report["check_images_are"] == "32 calibration images"
    for key, entry in report["files"].items():
        assert entry["max_abs_difference"] <= RUNTIME_TOLERANCE[key], key
        assert entry["latency_ms"] > 0 and entry["bytes"] > 0
    assert report["parameters"] == trainer.model.count_params()
