"""Int8 that keeps its accuracy? Float against full-integer TFLite on a model trained on real data.

Each model is trained by the real-data benchmark's recipe (``effnet-train`` with no config on
the scikit-learn digits folder, ``benchmarks/real_data.py``'s data, 64 px, 15 epochs), restored
with its EMA weights, and converted to TFLite float32, full-integer int8 (uint8 pixels in) and
int16x8 (int16 activations), calibrated on 200 training images with the evaluation
preprocessing. Every file runs in LiteRT on the 300 validation images; the table gives top-1,
agreement with the float SavedModel, file size and single-image latency.

    python benchmarks/edge_int8.py                                   # lite0, edgetpu-s, v2-b0
    python benchmarks/edge_int8.py --models=efficientnet-lite0 --epochs=5

Needs the benchmarks and litert extras. The last line reads::

    int8 on real data (digits): MODEL top-1 F float / I int8, agreement A; ...
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUANTIZATIONS = (None, "int8", "int16x8")


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
                     for f in files])


def split_files(root: str, split: str):
    classes = sorted(os.listdir(os.path.join(root, "train")))
    files = sorted(glob.glob(os.path.join(root, split, "*", "*.png")))
    return files, np.array([classes.index(os.path.basename(os.path.dirname(f))) for f in files])


def run_tflite(flatbuffer: bytes, pixels: np.ndarray):
    from effnet_tf.export.tflite_runtime import interpreter

    runner = interpreter(model_content=flatbuffer)
    source, target = runner.get_input_details()[0], runner.get_output_details()[0]
    runner.resize_tensor_input(source["index"], [1, *pixels.shape[1:]])
    runner.allocate_tensors()
    outputs, seconds = [], []
    for image in pixels:
        runner.set_tensor(source["index"], image[None].astype(source["dtype"]))
        start = time.perf_counter()
        runner.invoke()
        seconds.append(time.perf_counter() - start)
        outputs.append(runner.get_tensor(target["index"])[0].astype(np.float32))
    return np.stack(outputs), 1000 * float(np.median(seconds[5:] or seconds))


def measure(model_dir: str, data: str, args) -> list:
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
    rows = []
    with ema_weights(model):
        inference = prepare.inference_model(model)
        reference = np.concatenate([inference(pixels[i:i + 50], training=False).numpy() for i in range(0, len(pixels), 50)])
        for quantize in QUANTIZATIONS:
            flatbuffer = convert_tflite(inference, size, quantize, calibration if quantize else None)
            probabilities, latency = run_tflite(flatbuffer, pixels)
            rows.append({"file": quantize or "float32", "kib": len(flatbuffer) / 1024,
                         "top1": float((probabilities.argmax(1) == labels).mean()),
                         "agree": float((probabilities.argmax(1) == reference.argmax(1)).mean()),
                         "ms": latency})
    rows.insert(0, {"file": "Keras (float)", "kib": float("nan"), "ms": float("nan"),
                    "top1": float((reference.argmax(1) == labels).mean()), "agree": 1.0})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="efficientnet-lite0,efficientnet-edgetpu-s,efficientnetv2-b0")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data_root", default=os.path.join(tempfile.gettempdir(), "effnet_real_data"))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "effnet_edge_int8"))
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from real_data import dataset_dir
    from effnet_tf.export.tflite_runtime import runtime_name

    data = dataset_dir(args.data_root, "digits")
    print(f"TFLite runtime: {runtime_name()}; {args.epochs} epochs at {args.image_size} px, seed {args.seed}")
    print("| model | file | KiB | top-1 | agreement with float | LiteRT ms/image |")
    print("|---|---|---|---|---|---|")
    summary = []
    for model in args.models.split(","):
        rows = measure(train(model, data, args.work, args), data, args)
        for row in rows:
            print(f"| {model} | {row['file']} | {row['kib']:,.0f} | {row['top1']:.4f} | {row['agree']:.4f} | "
                  f"{row['ms']:.2f} |", flush=True)
        by_file = {row["file"]: row for row in rows}
        summary.append(f"{model} top-1 {by_file['float32']['top1']:.3f} float / {by_file['int8']['top1']:.3f} int8, "
                       f"agreement {by_file['int8']['agree']:.3f}")
    print("int8 on real data (digits): " + "; ".join(summary))


if __name__ == "__main__":
    main()
