"""Export: SavedModel signatures, .keras, TFLite, atomic writes (from a run directory: test_run_restore.py).

A tiny EfficientNet is trained for a few seconds on a task it can learn (the class is the
dominant colour channel), so its probabilities are informative (0.45..0.8, not saturated) and
top-1 agreement means something. References are independent of the export code: TF's own
decoders with a hand-computed crop window, the Keras model itself, and a plain-TensorFlow
subprocess that cannot import effnet_tf.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
import tensorflow as tf

import effnet_tf
from effnet_tf import export
from effnet_tf.export import atomic, bundle
from effnet_tf.storage import paths

VENV_BIN = os.path.dirname(sys.executable)
BLOCKS = ["r1_k3_s1_e1_i16_o8_c1", "r1_k3_s2_e4_i8_o16_se0.25"]
CLASS_NAMES = ["red", "green", "blue"]
SIZE = 40  # serving size of the tiny model (custom blocks have no variant eval size)
# (height, width, format): JPEG and PNG at different sizes and aspect ratios.
FILES = [(50, 70, "jpeg"), (64, 48, "png"), (97, 61, "jpeg"), (37, 90, "png"), (64, 64, "jpeg")]


def color_images(rng, n, height, width):
    """Noisy images whose class is the dominant colour channel (0 red, 1 green, 2 blue)."""
    labels = rng.integers(0, 3, n)
    x = rng.integers(0, 110, (n, height, width, 3)).astype(np.int32)
    x[np.arange(n), :, :, labels] += rng.integers(110, 146, (n, 1, 1))
    return np.clip(x, 0, 255).astype(np.uint8), labels


def train_color_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = effnet_tf.build_model(blocks=BLOCKS, width=0.5, depth=0.5, num_classes=3,
                                  dropout_rate=0.0, drop_connect_rate=0.0)
    x, y = color_images(np.random.default_rng(seed), 512, SIZE, SIZE)
    # Label smoothing keeps the probabilities away from 0/1, so comparisons are informative.
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.5))
    model.fit(x, np.eye(3)[y], batch_size=32, epochs=3, verbose=0)
    return model


def eval_window(height, width, size, fraction=None):
    """The eval crop, computed by hand: central ``fraction`` (default the official size/(size+32))
    of the shorter side; ``(0, 0, height, width)`` (the whole image) for a fraction of 1."""
    if fraction == 1.0:
        return 0, 0, height, width
    crop = int((size / (size + 32) if fraction is None else fraction) * min(height, width))
    return (height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop


def reference_pixels(encoded, size, fraction=None):
    """Eval preprocessing restated with TF's decoders: crop window, bilinear resize, round to uint8."""
    if encoded[:3] == b"\xff\xd8\xff":
        h, w, _ = tf.image.extract_jpeg_shape(encoded).numpy()
        oy, ox, ch, cw = eval_window(h, w, size, fraction)
        cropped = tf.image.decode_and_crop_jpeg(encoded, [oy, ox, ch, cw], channels=3).numpy()
    else:
        full = tf.io.decode_png(encoded, channels=3).numpy()
        oy, ox, ch, cw = eval_window(*full.shape[:2], size, fraction)
        cropped = full[oy:oy + ch, ox:ox + cw]
    resized = tf.image.resize(cropped[None].astype(np.float32), [size, size], method="bilinear")[0]
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def keras_probabilities(model, pixels):
    out = model(np.asarray(pixels), training=False)
    out = tf.cast(out, tf.float32)
    return (out if model.classifier_activation == "softmax" else tf.nn.softmax(out)).numpy()


@pytest.fixture(scope="module")
def model():
    return train_color_model()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Encoded test files written to disk: list of (path, bytes, label)."""
    directory = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    out = []
    for i, (h, w, fmt) in enumerate(FILES):
        pixels, label = color_images(rng, 1, h, w)
        encoded = (tf.io.encode_jpeg(pixels[0], quality=95) if fmt == "jpeg" else tf.io.encode_png(pixels[0])).numpy()
        path = directory / f"img{i}.{'jpg' if fmt == 'jpeg' else 'png'}"
        path.write_bytes(encoded)
        out.append((str(path), encoded, int(label[0])))
    return out


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    target = str(tmp_path_factory.mktemp("exports") / "color")
    export.export_all(model, target, image_size=SIZE, class_names=CLASS_NAMES, top_k=5)
    return target


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(os.path.join(exported, "saved_model"))


def test_export_all_layout_and_metadata(exported, model):
    assert sorted(os.listdir(exported)) == sorted(
        ["saved_model", "model.keras", "model_float32.tflite", "model_dynamic_range.tflite", "metadata.json"])
    meta = bundle.read_metadata(exported)
    assert meta["image_size"] == SIZE
    assert meta["class_names"] == CLASS_NAMES
    assert meta["top_k"] == 3  # capped at the number of classes
    assert meta["normalization"] == "imagenet"
    assert meta["model"]["blocks"] == BLOCKS and meta["model"]["num_classes"] == 3
    assert meta["model"]["parameters"] == model.count_params()
    assert "0..255" in meta["input"]
    assert meta["files"]["saved_model"] == "saved_model"
    # Nothing left beside the target by the atomic rename.
    assert [p for p in os.listdir(os.path.dirname(exported)) if ".tmp-" in p] == []


def test_export_report_runs_every_file_in_its_runtime(exported, model):
    """metadata.json's report: every written file, its size on disk, its runtime, a latency, and
    its agreement with the Keras model (no calibration images here: 8 random-pixel images)."""
    from effnet_tf.export.report import format_report, multiply_adds

    meta = bundle.read_metadata(exported)
    report = meta["report"]
    assert set(report["files"]) == set(meta["files"]) == {"saved_model", "keras", "tflite_float32",
                                                          "tflite_dynamic_range"}
    assert report["check_images"] == 8 and report["check_images_are"].startswith("8 random-pixel images")
    assert report["parameters"] == model.count_params()
    assert report["multiply_adds"] == multiply_adds(model, SIZE) > 0
    runtimes = {key: entry["runtime"] for key, entry in report["files"].items()}
    assert runtimes["saved_model"] == f"TensorFlow {tf.__version__}" and runtimes["keras"] == f"Keras {keras.__version__}"
    assert runtimes["tflite_float32"].startswith("ai-edge-litert")
    for key, entry in report["files"].items():
        path = os.path.join(exported, entry["file"])
        size = (sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)
                if os.path.isdir(path) else os.path.getsize(path))
        assert entry["bytes"] == size, key
        assert entry["latency_ms"] > 0 and entry["top1_agreement"] == 1.0, key
        assert entry["max_abs_difference"] <= (0.03 if key == "tflite_dynamic_range" else 1e-5), key
    table = format_report(report)
    assert "model_dynamic_range.tflite" in table and "multiply-adds at 40 px" in table


def test_multiply_adds_by_hand_and_against_the_papers():
    from effnet_tf.export.report import multiply_adds

    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)                  # 10*10 * 3*3*3 * 8 = 21,600
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)      # 5*5 * 3*3 * 8 = 1,800
    x = keras.layers.Conv2D(16, 1, groups=2)(x)                            # 5*5 * 4 * 16 = 1,600
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5)(x)                                     # 16 * 5 = 80
    assert multiply_adds(keras.Model(inputs, outputs), 10) == 21_600 + 1_800 + 1_600 + 80
    # What the papers call FLOPs: B0 0.39B at 224 (arXiv:1905.11946, Table 2); V2-B0 0.72B at 224
    # (google/automl's efficientnetv2 README).
    assert round(multiply_adds(effnet_tf.build_model("efficientnet-b0"), 224) / 1e9, 2) == 0.39
    assert round(multiply_adds(effnet_tf.build_model("efficientnetv2-b0"), 224) / 1e9, 2) == 0.72


def test_serving_default_matches_keras_on_jpeg_and_png(loaded, model, images):
    encoded = [data for _, data, _ in images]
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
    expected = keras_probabilities(model, np.stack([reference_pixels(e, SIZE) for e in encoded]))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-6)
    order = np.argsort(-expected, axis=1)
    np.testing.assert_array_equal(out["top_k_indices"].numpy(), order)
    np.testing.assert_allclose(out["top_k_scores"].numpy(), np.take_along_axis(expected, order, 1), atol=1e-6)
    labels = out["top_k_labels"].numpy().astype(str)
    np.testing.assert_array_equal(labels, np.array(CLASS_NAMES)[order])
    # The trained model gets the dominant colour right, so the labels are meaningful.
    assert list(labels[:, 0]) == [CLASS_NAMES[label] for _, _, label in images]


def test_serving_default_reads_every_format_training_reads(loaded, images):
    """BMP and lossless WebP hold the PNG's exact pixels, so they are served exactly as the PNG;
    a GIF is served as its first frame (the frame PIL decodes first)."""
    import io

    from PIL import Image

    png = next(data for path, data, _ in images if path.endswith(".png"))
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    encoded = {}
    for fmt, options in (("BMP", {}), ("WEBP", {"lossless": True})):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt, **options)
        encoded[fmt] = buffer.getvalue()
    first = Image.fromarray(pixels).quantize(64)
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=[Image.fromarray(255 - pixels).quantize(64)])
    encoded["GIF"] = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(first.convert("RGB"))).save(buffer, format="PNG")
    first_frame_png = buffer.getvalue()
    serve = loaded.signatures["serving_default"]
    out = serve(image_bytes=tf.constant([png, encoded["BMP"], encoded["WEBP"], encoded["GIF"], first_frame_png]))
    probabilities = out["probabilities"].numpy()
    np.testing.assert_allclose(probabilities[1], probabilities[0], atol=1e-6)
    np.testing.assert_allclose(probabilities[2], probabilities[0], atol=1e-6)
    np.testing.assert_allclose(probabilities[3], probabilities[4], atol=1e-6)


def test_crop_fraction_is_served_and_recorded(model, images, tmp_path):
    # A run trained on whole images (data.eval_crop_fraction: 1) is served on whole images.
    target = str(tmp_path / "whole")
    export.export_all(model, target, formats=("saved_model",), image_size=SIZE, crop_fraction=1.0, report=False)
    assert bundle.read_metadata(target)["crop_fraction"] == 1.0
    assert bundle.read_metadata(target)["image_size"] == SIZE
    serve = tf.saved_model.load(os.path.join(target, "saved_model")).signatures["serving_default"]
    encoded = [data for _, data, _ in images]
    whole = []
    for data in encoded:
        full = tf.io.decode_image(data, channels=3, expand_animations=False).numpy().astype(np.float32)
        resized = tf.image.resize(full, [SIZE, SIZE], method="bilinear").numpy()
        whole.append(np.clip(np.round(resized), 0, 255).astype(np.uint8))
    expected = keras_probabilities(model, np.stack(whole))
    np.testing.assert_allclose(serve(image_bytes=tf.constant(encoded))["probabilities"].numpy(), expected, atol=1e-6)


def test_default_export_records_the_official_crop(exported):
    assert bundle.read_metadata(exported)["crop_fraction"] == pytest.approx(SIZE / (SIZE + 32), abs=1e-6)


def test_predict_pixels_any_size_uint8_and_float(loaded, model):
    pixels, _ = color_images(np.random.default_rng(2), 3, 37, 53)  # not the serving size
    expected = keras_probabilities(model, pixels)
    as_uint8 = loaded.signatures["predict_pixels_uint8"](pixels=tf.constant(pixels))
    as_float = loaded.signatures["predict_pixels"](pixels=tf.constant(pixels, tf.float32))
    np.testing.assert_allclose(as_uint8["probabilities"].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(as_float["probabilities"].numpy(), expected, atol=1e-6)
    assert as_float["top_k_labels"].shape == (3, 3)


def test_bad_bytes_name_the_element_and_the_process_survives(loaded, images):
    good = [data for _, data, _ in images[:2]]
    serve = loaded.signatures["serving_default"]
    before = serve(image_bytes=tf.constant(good))["probabilities"].numpy()
    for bad, pattern in [
        (b"%PDF-1.4 not an image", "element 2 of image_bytes is not an image in a format the model reads"),
        (b"", "element 2 of image_bytes is not an image in a format the model reads.*0 bytes long"),
        (b"hello world", "element 2 of image_bytes is not an image.*JPEG, PNG, GIF, BMP, WebP or JPEG XL"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "element 2 of image_bytes is not an image"),  # RIFF, not WebP
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
            serve(image_bytes=tf.constant(good + [bad]))
    # A valid header with a corrupt body fails in the decoder: an error, not a crash.
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(image_bytes=tf.constant([images[1][1][:60]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes must be a 1-D batch \[N\].*got shape \[\]"):
        serve(image_bytes=tf.constant(good[0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got shape \[1 2\]"):
        serve(image_bytes=tf.constant([good]))
    after = serve(image_bytes=tf.constant(good))["probabilities"].numpy()
    np.testing.assert_array_equal(before, after)
    assert serve(image_bytes=tf.constant([], tf.string))["probabilities"].shape == (0, 3)


def test_wrong_pixel_shape_is_a_clear_error(loaded):
    serve = loaded.signatures["predict_pixels"]
    # Without the check a rank-3 batch reaches oneDNN's convolution and aborts the process.
    for shape in [(8, 8, 3), (1, 8, 8, 4), (1, 8, 8, 1), (1, 0, 8, 3), (2,)]:
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"pixels must be a batch of RGB images \[N, H, W, 3\].*got shape"):
            serve(pixels=tf.zeros(shape, tf.float32))
    assert serve(pixels=tf.zeros((2, 8, 8, 3)))["probabilities"].shape == (2, 3)


SUBPROCESS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np

    class NoEffnet:  # fail loudly if anything tries to import effnet_tf
        def find_spec(self, name, path=None, target=None):
            if name == "effnet_tf" or name.startswith("effnet_tf."):
                raise ImportError("effnet_tf must not be imported here")
            return None

    sys.meta_path.insert(0, NoEffnet())
    import tensorflow as tf

    saved_model, files, pixels_file, out_file = sys.argv[1:5]
    loaded = tf.saved_model.load(saved_model)
    encoded = [open(f, "rb").read() for f in files.split(",")]
    serve = loaded.signatures["serving_default"]
    result = {"signatures": sorted(loaded.signatures.keys())}
    out = serve(image_bytes=tf.constant(encoded))
    result["probabilities"] = out["probabilities"].numpy().tolist()
    result["labels"] = out["top_k_labels"].numpy().astype(str).tolist()
    try:
        serve(image_bytes=tf.constant(encoded[:1] + [b"not an image"]))
        result["bad_error"] = None
    except tf.errors.InvalidArgumentError as error:
        result["bad_error"] = error.message
    result["after_error"] = serve(image_bytes=tf.constant(encoded))["probabilities"].numpy().tolist()
    pixels = np.load(pixels_file)
    result["pixels_uint8"] = loaded.signatures["predict_pixels_uint8"](pixels=tf.constant(pixels))["probabilities"].numpy().tolist()
    result["pixels_float"] = loaded.predict_pixels(tf.constant(pixels, tf.float32))["probabilities"].numpy().tolist()
    result["effnet_tf_imported"] = any(m.split(".")[0] == "effnet_tf" for m in sys.modules)
    json.dump(result, open(out_file, "w"))
""")


def _run(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_reload_in_plain_tensorflow_subprocess(exported, model, images, tmp_path):
    pixels, _ = color_images(np.random.default_rng(3), 2, 45, 41)
    np.save(tmp_path / "pixels.npy", pixels)
    script = tmp_path / "serve.py"
    script.write_text(SUBPROCESS_SCRIPT)
    files = ",".join(path for path, _, _ in images)
    proc = _run([sys.executable, str(script), os.path.join(exported, "saved_model"), files,
                 str(tmp_path / "pixels.npy"), str(tmp_path / "out.json")], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert not result["effnet_tf_imported"]
    assert result["signatures"] == ["predict_pixels", "predict_pixels_uint8", "serving_default"]
    expected = keras_probabilities(model, np.stack([reference_pixels(d, SIZE) for _, d, _ in images]))
    np.testing.assert_allclose(result["probabilities"], expected, atol=1e-6)
    np.testing.assert_allclose(result["after_error"], expected, atol=1e-6)
    assert [row[0] for row in result["labels"]] == [CLASS_NAMES[label] for _, _, label in images]
    assert "element 1 of image_bytes is not an image in a format the model reads" in result["bad_error"]
    np.testing.assert_allclose(result["pixels_uint8"], keras_probabilities(model, pixels), atol=1e-6)
    np.testing.assert_allclose(result["pixels_float"], keras_probabilities(model, pixels), atol=1e-6)


@pytest.mark.slow
def test_saved_model_cli_show_and_run(exported, model, images, tmp_path):
    saved_model = os.path.join(exported, "saved_model")
    show = _run([os.path.join(VENV_BIN, "saved_model_cli"), "show", "--dir", saved_model, "--all"], cwd=str(tmp_path))
    assert show.returncode == 0, show.stderr[-3000:]
    for text in ["signature_def['serving_default']", "signature_def['predict_pixels']",
                 "signature_def['predict_pixels_uint8']", "inputs['image_bytes']", "inputs['pixels']",
                 "outputs['top_k_labels']", "outputs['probabilities']", "DT_STRING", "DT_UINT8"]:
        assert text in show.stdout, text
    # saved_model_cli run: a bytes array in a .npy file (fixed-width 'S', no pickling needed).
    encoded = [data for _, data, _ in images[:2]]
    np.save(tmp_path / "bytes.npy", np.array(encoded, dtype=np.bytes_))
    out_dir = tmp_path / "cli_out"
    run = _run([os.path.join(VENV_BIN, "saved_model_cli"), "run", "--dir", saved_model, "--tag_set", "serve",
                "--signature_def", "serving_default", "--inputs", f"image_bytes={tmp_path / 'bytes.npy'}",
                "--outdir", str(out_dir)], cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    expected = keras_probabilities(model, np.stack([reference_pixels(e, SIZE) for e in encoded]))
    np.testing.assert_allclose(np.load(out_dir / "probabilities.npy"), expected, atol=1e-6)
    labels = np.load(out_dir / "top_k_labels.npy", allow_pickle=True)
    assert [label.decode() if isinstance(label, bytes) else label for label in labels[:, 0]] == \
        [CLASS_NAMES[label] for _, _, label in images[:2]]


def test_keras_file_loads_in_safe_mode(exported, model):
    reloaded = keras.saving.load_model(os.path.join(exported, "model.keras"), safe_mode=True)
    assert isinstance(reloaded, effnet_tf.EfficientNet)
    assert reloaded.get_config() == model.get_config()
    assert getattr(reloaded, "optimizer", None) is None  # no training state: a clean start for fine-tuning
    pixels, _ = color_images(np.random.default_rng(4), 4, SIZE, SIZE)
    np.testing.assert_allclose(reloaded(pixels, training=False).numpy(), model(pixels, training=False).numpy(),
                               atol=1e-6)


def _tflite_probabilities(path, pixels):
    interpreter = Interpreter(model_path=path)  # LiteRT, the TFLite runtime
    source = interpreter.get_input_details()[0]
    assert list(source["shape_signature"]) == [-1, SIZE, SIZE, 3] and source["dtype"] == np.float32
    interpreter.resize_tensor_input(source["index"], list(pixels.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], pixels.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_tflite_float32_matches_keras(exported, model):
    pixels, _ = color_images(np.random.default_rng(5), 16, SIZE, SIZE)
    got = _tflite_probabilities(os.path.join(exported, "model_float32.tflite"), pixels)
    expected = keras_probabilities(model, pixels)
    # Same float32 math with other kernels (XNNPACK vs oneDNN): only summation order differs,
    # ~1e-7 relative per layer here; 1e-5 absolute on probabilities leaves two orders of margin.
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_tflite_dynamic_range_agrees_with_keras(exported, model):
    pixels, labels = color_images(np.random.default_rng(6), 32, SIZE, SIZE)
    path = os.path.join(exported, "model_dynamic_range.tflite")
    got = _tflite_probabilities(path, pixels)
    expected = keras_probabilities(model, pixels)
    # int8 weights (per-channel scales: error <= scale/2, ~0.4% of each channel's range) and
    # activations quantized per batch on the fly. Measured on this net over 256 images: max
    # 1.0e-2, mean 2.0e-3 absolute on the probabilities, top-1 agreement 100%. Bound: 0.03
    # absolute (3x the measured max); then top-1 cannot flip where Keras' margin between its
    # first two classes exceeds 2 x 0.03, so it must agree on all those images.
    assert np.abs(got - expected).max() < 0.03
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.06
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(got.argmax(1)[clear], expected.argmax(1)[clear])
    # Weights of 1024+ elements are stored as int8 (here top_conv and the classifier; the
    # converter keeps smaller ones in float, so the file is smaller but not 4x on a net this tiny).
    tensors = Interpreter(model_path=path).get_tensor_details()
    int8 = " ".join(t["name"] for t in tensors if t["dtype"] == np.int8)
    assert "top_conv" in int8 and "predictions" in int8
    assert os.path.getsize(path) < os.path.getsize(os.path.join(exported, "model_float32.tflite"))


@pytest.fixture(scope="module")
def exported_int8(model, tmp_path_factory):
    target = str(tmp_path_factory.mktemp("exports") / "color_int8")
    calibration, _ = color_images(np.random.default_rng(7), 128, SIZE, SIZE)
    export.export_all(model, target, formats=("tflite_int8",), image_size=SIZE, class_names=CLASS_NAMES, report=False,
                      calibration_images=calibration)
    return target


def test_tflite_int8_is_full_integer_with_raw_pixel_input(exported_int8):
    meta = bundle.read_metadata(exported_int8)
    assert sorted(os.listdir(exported_int8)) == ["metadata.json", "model_int8.tflite"]
    assert meta["files"] == {"tflite_int8": "model_int8.tflite"}
    interpreter = Interpreter(model_path=os.path.join(exported_int8, "model_int8.tflite"))
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    # uint8 pixels as they are (scale 1, zero point 0); probabilities q / 256.
    assert source["dtype"] == np.uint8 and source["quantization"] == (1.0, 0)
    assert target["dtype"] == np.uint8 and target["quantization"] == (1 / 256, 0)
    assert meta["tflite_int8"] == {"input": {"dtype": "uint8", "scale": 1.0, "zero_point": 0},
                                   "output": {"dtype": "uint8", "scale": 1 / 256, "zero_point": 0}}
    # Full integer: no float tensor anywhere (int32 holds the biases).
    dtypes = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    assert dtypes <= {"int8", "uint8", "int32"}, dtypes


def test_tflite_int8_agrees_with_keras(exported_int8, model):
    pixels, _ = color_images(np.random.default_rng(6), 128, SIZE, SIZE)
    interpreter = Interpreter(model_path=os.path.join(exported_int8, "model_int8.tflite"))
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(source["index"], list(pixels.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], pixels)  # raw uint8 pixels
    interpreter.invoke()
    got = interpreter.get_tensor(target["index"]).astype(np.float32) / 256.0
    expected = keras_probabilities(model, pixels)
    # int8 activations (per-tensor scales from calibration) on every layer, output steps of
    # 1/256. Measured on this net over these 128 images: top-1 agreement 100%, absolute error on
    # the probabilities mean 0.006, max 0.032. Bounds: 97% agreement, mean 0.02, max 0.1.
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.97
    error = np.abs(got - expected)
    assert error.mean() < 0.02 and error.max() < 0.1


def test_tflite_int16x8_format_keeps_float_io_and_int16_activations(model, tmp_path):
    """The V2 option (SE and SiLU lose agreement in int8: docs/export.md): int8 weights, int16
    activations, float32 pixels in and probabilities out, calibrated like int8."""
    target = str(tmp_path / "export")
    calibration, _ = color_images(np.random.default_rng(7), 64, SIZE, SIZE)
    export.export_all(model, target, formats=("tflite_int16x8",), image_size=SIZE, calibration_images=calibration)
    meta = bundle.read_metadata(target)
    assert meta["files"] == {"tflite_int16x8": "model_int16x8.tflite"}
    path = os.path.join(target, "model_int16x8.tflite")
    interpreter = Interpreter(model_path=path)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    dtypes = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    assert {"int16", "int8"} <= dtypes, dtypes
    pixels, _ = color_images(np.random.default_rng(6), 64, SIZE, SIZE)
    got = _tflite_probabilities(path, pixels)
    expected = keras_probabilities(model, pixels)
    # Measured on these images: |dp| mean 0.0032, max 0.032 (int8 activations: 0.0061, 0.031;
    # the int8 weights alone, dynamic range: 0.0020, 0.0097).
    error = np.abs(got - expected)
    assert error.mean() < 0.005 and error.max() < 0.05
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert meta["report"]["files"]["tflite_int16x8"]["max_abs_difference"] < 0.05
    with pytest.raises(ValueError, match="calibration_images"):
        export.export_all(model, str(tmp_path / "x"), formats=("tflite_int16x8",), image_size=SIZE)


def test_tflite_int8_needs_calibration_images(model, tmp_path):
    with pytest.raises(ValueError, match="calibration_images"):
        export.export_all(model, str(tmp_path / "x"), formats=("tflite_int8",), image_size=SIZE)
    with pytest.raises(ValueError, match="calibration_images"):
        export.export_tflite(model, str(tmp_path / "x.tflite"), image_size=SIZE, quantize="int8")
    wrong_size, _ = color_images(np.random.default_rng(0), 2, SIZE + 8, SIZE + 8)
    with pytest.raises(ValueError, match=r"size 40, got shape \(2, 48, 48, 3\)"):
        export.export_tflite(model, str(tmp_path / "y.tflite"), image_size=SIZE, quantize="int8",
                             calibration_images=[wrong_size])
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y.tflite")


def _leftovers(directory):
    return sorted(p for p in os.listdir(directory) if ".tmp-" in p or ".old-" in p)


@pytest.mark.parametrize("interrupt", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_export_leaves_no_partial_target(model, tmp_path, monkeypatch, interrupt):
    target = tmp_path / "export"

    def fail(*args, **kwargs):  # model.keras is already written when the TFLite step fails
        [partial] = [p for p in os.listdir(tmp_path) if ".tmp-" in p]
        assert os.listdir(tmp_path / partial) == ["model.keras"]
        raise interrupt

    monkeypatch.setattr(bundle, "convert_tflite", fail)
    with pytest.raises(type(interrupt)):
        export.export_all(model, str(target), formats=("keras", "tflite"), image_size=SIZE, report=False)
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_existing_target_is_refused_unless_overwrite(model, tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old_marker").write_text("previous model")
    with pytest.raises(FileExistsError, match="already exists.*overwrite"):
        export.export_saved_model(model, str(target), image_size=SIZE)
    with pytest.raises(FileExistsError, match="already exists.*overwrite"):
        export.export_all(model, str(target), image_size=SIZE, formats=("keras",), report=False)
    assert os.listdir(target) == ["old_marker"]
    export.export_all(model, str(target), image_size=SIZE, formats=("keras",), overwrite=True, report=False)
    assert sorted(os.listdir(target)) == ["metadata.json", "model.keras"]
    assert _leftovers(tmp_path) == []
    # A file target (.keras) behaves the same.
    path = tmp_path / "m.keras"
    export.export_keras(model, str(path))
    with pytest.raises(FileExistsError):
        export.export_keras(model, str(path))
    export.export_keras(model, str(path), overwrite=True)
    assert _leftovers(tmp_path) == []


def test_atomic_output_restores_previous_target_when_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "v1").write_text("1")
    real_rename = paths.rename

    def flaky(source, destination):
        if ".tmp-" in source:
            raise OSError("rename failed")
        real_rename(source, destination)

    monkeypatch.setattr(paths, "rename", flaky)
    with pytest.raises(OSError, match="rename failed"):
        with atomic.atomic_output(str(target), overwrite=True) as temporary:
            os.makedirs(temporary)
            open(os.path.join(temporary, "v2"), "w").close()
    assert sorted(os.listdir(target)) == ["v1"]
    assert _leftovers(tmp_path) == []


def test_mixed_precision_and_compiled_models_export_float32_without_optimizer(tmp_path):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = effnet_tf.build_model(blocks=BLOCKS, width=0.5, depth=0.5, num_classes=3)
    finally:
        keras.config.set_dtype_policy(previous)
    mixed.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert mixed.get_layer("stem_conv").compute_dtype == "bfloat16"
    path = str(tmp_path / "m.keras")
    export.export_keras(mixed, path)
    reloaded = keras.saving.load_model(path)
    assert {layer.compute_dtype for layer in reloaded._flatten_layers()} == {"float32"}
    assert getattr(reloaded, "optimizer", None) is None
    for a, b in zip(reloaded.get_weights(), mixed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_argument_errors(model, tmp_path):
    target = str(tmp_path / "x")
    with pytest.raises(ValueError, match="image_size is required"):
        export.export_saved_model(model, target)
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        export.export_saved_model(model, target, image_size=SIZE, class_names=["a", "b"])
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        export.export_saved_model(model, target, image_size=SIZE, top_k=0)
    with pytest.raises(ValueError, match="formats must be"):
        export.export_all(model, target, image_size=SIZE, formats=("coreml",))
    with pytest.raises(ValueError, match="quantize must be one of"):
        export.export_tflite(model, target + ".tflite", image_size=SIZE, quantize="int4")
    with pytest.raises(ValueError, match="must end with '.keras'"):
        export.export_keras(model, target + ".h5")
    headless = effnet_tf.build_model(blocks=BLOCKS, width=0.5, depth=0.5, include_top=False, pooling="avg")
    with pytest.raises(ValueError, match="include_top=False"):
        export.export_saved_model(headless, target, image_size=SIZE)
    assert not os.path.exists(target)
    # A registered variant brings its eval size.
    from effnet_tf.export.prepare import resolve_image_size

    small_b3 = effnet_tf.build_model("efficientnetv2-b3", num_classes=2, width=0.1, depth=0.1)
    assert resolve_image_size(small_b3, None) == 300


def test_onnx_without_its_extra_is_a_clear_error_before_any_work(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    with pytest.raises(ImportError, match=r"'onnx' needs tf2onnx: pip install 'effnet_tf\[onnx\]'"):
        export.export_all(model, str(tmp_path / "export"), formats=("saved_model", "onnx"), image_size=SIZE)
    assert not os.path.exists(tmp_path / "export")
