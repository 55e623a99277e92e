"""Int8 that keeps its accuracy? Float against quantized TFLite on models trained on real data.

Each model is trained by the real-data benchmark's recipe (``effnet-train`` with no config on
``benchmarks/real_data.py``'s folders: the scikit-learn digits and the scikit-image photos, 64 px,
15 epochs), restored with its EMA weights, and converted by TensorFlow's converter to float32,
dynamic range, full-integer int8 (uint8 pixels in) and int16x8 (int16 activations), calibrated on
200 training images with the evaluation preprocessing. With ``ai-edge-quantizer`` installed, its
recipes are measured too (``aeq ...`` rows, min/max calibration over the same images): int8
everywhere, int8 with the sigmoids (SiLU's and squeeze-excite's gates) in int16, int16 everywhere.
Every file runs in LiteRT on the 300 validation images; the table gives top-1, agreement with the
float model, the mean L1 distance of the probabilities, file size and single-image latency.

    python benchmarks/edge_int8.py                                   # lite0, edgetpu-s, v2-b0; both datasets
    python benchmarks/edge_int8.py --models=efficientnet-lite0 --datasets=digits --epochs=5

Needs the benchmarks and litert extras (``pip install ai-edge-quantizer`` for its rows). The last
line reads::

    int8 on real data: MODEL/DATASET top-1 F float / I int8, agreement A; ...
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUANTIZATIONS = (None, "dynamic_range", "int8", "int16x8")  # TensorFlow's converter, as export writes them
# ai-edge-quantizer recipes: (name, [(tensor-name regex, op, activation bits)]); weights int8 per channel.
AEQ_RECIPES = (
    ("aeq int8", [(".*", "ALL_SUPPORTED", 8)]),
    ("aeq int8, sigmoids int16", [(".*", "ALL_SUPPORTED", 8), (".*", "LOGISTIC", 16)]),
    ("aeq int16", [(".*", "ALL_SUPPORTED", 16)]),
)


def train(model: str, data: str, work: str, args) -> str:
    model_dir = os.path.join(work, model)
    if not glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.index")):
        overrides = [f"data.name=folder:{data}", f"train.epochs={args.epochs}", f"train.image_size={args.image_size}",
                     f"eval.image_size={args.image_size}", f"runtime.seed={args.seed}", "export.enabled=false",
                     "runtime.verbose=0", "runtime.tensorboard=false", f"model.name={model}"]
        command = [sys.executable, "-m", "effnet_tf.main", f"--model_dir={model_dir}",
                   "--params_override=" + ",".join(overrides)]
        subprocess.run(command, check=True, cwd=REPO)
    return model_dir


def pixels_of(files, size: int, crop_fraction) -> np.ndarray:
    import tensorflow as tf

    from effnet_tf.data.preprocessing import preprocess_eval

    return np.stack([preprocess_eval(tf.io.read_file(f), size, encoded=True, crop_fraction=crop_fraction).numpy()
                     for f in files]).astype(np.float32)


def split_files(root: str, split: str):
    classes = sorted(os.listdir(os.path.join(root, "train")))
    files = sorted(glob.glob(os.path.join(root, split, "*", "*.png")))
    return files, np.array([classes.index(os.path.basename(os.path.dirname(f))) for f in files])


def run_tflite(flatbuffer: bytes, pixels: np.ndarray):
    """Probabilities of every image (one at a time) and the median single-image latency (ms)."""
    from effnet_tf.export.report import median_latency_ms
    from effnet_tf.export.tflite_runtime import TFLiteClassifier

    classifier = TFLiteClassifier(model_content=flatbuffer)
    probabilities = np.concatenate([classifier(image[None]) for image in pixels])
    return probabilities, median_latency_ms(classifier, pixels[:1], repeats=50)


def aeq_quantize(float_flatbuffer: bytes, layers, calibration: np.ndarray) -> bytes:
    """An ai-edge-quantizer recipe applied to the float32 file. Calibration keeps each tensor's
    min and max over all images: the quantizer's default moving average of per-image ranges
    clips activations (measured: agreement 88% instead of 99% with int16 everywhere)."""
    from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    recipe = recipe_manager.RecipeManager()
    for regex, op, bits in layers:
        recipe.add_static_config(regex, getattr(qtyping.TFLOperationName, op), bits, 8)
    ranges = calibrator.Calibrator(float_flatbuffer, num_threads=2, qsv_update_func=qsv_utils.min_max_update)
    ranges.calibrate({"serving_default": [{"pixels": image[None]} for image in calibration]}, recipe)
    result = quantizer.Quantizer(float_flatbuffer, recipe.get_quantization_recipe()).quantize(
        ranges.get_model_qsvs(), enable_progress_report=False)
    return bytes(result.quantized_model)


def have_aeq() -> bool:
    try:
        import ai_edge_quantizer  # noqa: F401
    except ImportError:
        return False
    return True


def measure(model_dir: str, data: str, args) -> list:
    import tensorflow as tf

    from effnet_tf.export import prepare
    from effnet_tf.export.tflite import convert_tflite
    from effnet_tf.run.restore import restore_from_model_dir
    from effnet_tf.training.ema import ema_weights

    model, config, _ = restore_from_model_dir(model_dir)
    size, crop = config.eval.image_size, config.data.eval_crop_fraction
    val_files, labels = split_files(data, "validation")
    train_files, _ = split_files(data, "train")
    rng = np.random.default_rng(0)
    calibration = pixels_of(rng.choice(train_files, 200, replace=False), size, crop)
    pixels = pixels_of(val_files, size, crop)
    files = []
    with ema_weights(model):
        inference = prepare.inference_model(model)
        reference = np.concatenate([tf.nn.softmax(inference(pixels[i:i + 50], training=False)).numpy()
                                    for i in range(0, len(pixels), 50)])
        for quantize in QUANTIZATIONS:
            files.append((quantize or "float32", convert_tflite(inference, size, quantize,
                                                                  calibration if quantize in ("int8", "int16x8") else None)))
    if have_aeq():
        files += [(name, aeq_quantize(files[0][1], layers, calibration)) for name, layers in AEQ_RECIPES]
    rows = [{"file": "Keras (float)", "kib": float("nan"), "ms": float("nan"), "l1": 0.0,
             "top1": float((reference.argmax(1) == labels).mean()), "agree": 1.0}]
    for name, flatbuffer in files:
        probabilities, latency = run_tflite(flatbuffer, pixels)
        rows.append({"file": name, "kib": len(flatbuffer) / 1024, "ms": latency,
                     "top1": float((probabilities.argmax(1) == labels).mean()),
                     "agree": float((probabilities.argmax(1) == reference.argmax(1)).mean()),
                     "l1": float(np.abs(probabilities - reference).sum(1).mean())})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="efficientnet-lite0,efficientnet-edgetpu-s,efficientnetv2-b0")
    parser.add_argument("--datasets", default="digits,photos")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data_root", default=os.path.join(tempfile.gettempdir(), "effnet_real_data"))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "effnet_edge_int8"))
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from real_data import dataset_dir
    from effnet_tf.export.tflite_runtime import runtime_name

    print(f"TFLite runtime: {runtime_name()}; {args.epochs} epochs at {args.image_size} px, seed {args.seed}; "
          f"ai-edge-quantizer rows: {'yes' if have_aeq() else 'no (not installed)'}")
    print("| model | data | file | KiB | top-1 | agreement with float | mean L1 of probabilities | LiteRT ms/image |")
    print("|---|---|---|---|---|---|---|---|")
    summary = []
    for dataset in args.datasets.split(","):
        data = dataset_dir(args.data_root, dataset)
        work = args.work if dataset == "digits" else f"{args.work}_{dataset}"
        for model in args.models.split(","):
            rows = measure(train(model, data, work, args), data, args)
            for row in rows:
                print(f"| {model} | {dataset} | {row['file']} | {row['kib']:,.0f} | {row['top1']:.4f} | "
                      f"{row['agree']:.4f} | {row['l1']:.4f} | {row['ms']:.2f} |", flush=True)
            by_file = {row["file"]: row for row in rows}
            summary.append(f"{model}/{dataset} top-1 {by_file['float32']['top1']:.3f} float / "
                           f"{by_file['int8']['top1']:.3f} int8, agreement {by_file['int8']['agree']:.3f}")
    print("int8 on real data: " + "; ".join(summary))


if __name__ == "__main__":
    main()
