"""The demo run's evaluation with and without the EMA of the BatchNorm statistics, and its TFLite
files (float32, dynamic-range, full-integer int8) against the Keras model.

For each seed: trains ``configs/demo.yaml`` (or resumes a finished run in ``--runs_dir``), then
on the eval split (512 images, 64 px) reports top-1 of

* the trained weights,
* the EMA weights with the raw BatchNorm statistics (what Keras' EMA alone gives),
* the EMA weights with the EMA of the statistics (``train.ema_batchnorm``, the official recipe),

and for the exported model (EMA weights + statistics) each TFLite file's size, top-1 and
top-1 agreement with the Keras model it came from (also on the half of the images whose top-2
logit margin is largest), including ``int16x8`` (int16 activations) for reference. The int8 file is calibrated on
``--calibration`` training images (eval preprocessing), as ``export.formats=[tflite_int8]`` does.

    python benchmarks/ema_and_int8.py --seeds=1,2 --runs_dir=/tmp/ema_int8
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def train_demo(model_dir: str, seed: int):
    from effnet_tf import config as config_lib
    from effnet_tf.run.driver import Driver

    config = config_lib.load_yaml_files([os.path.join(REPO, "configs", "demo.yaml")])
    config_lib.apply_override_string(
        config, f"runtime.model_dir={model_dir},runtime.seed={seed},runtime.verbose=0,export.enabled=false,"
                "eval.frequency=end")
    start = time.perf_counter()
    Driver(config).run()
    return time.perf_counter() - start


def eval_set(config):
    from effnet_tf.data import build_dataset, open_source

    source = open_source(config.data)
    batches = list(build_dataset(source, split=config.data.eval_split, image_size=config.eval.image_size,
                                 global_batch_size=64, training=False, drop_remainder=False))
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches]).argmax(1)
    return source, images, labels


def keras_top1(model, images):
    return np.concatenate([model(images[i:i + 64], training=False).numpy().argmax(1)
                           for i in range(0, len(images), 64)])


def tflite_top1(flatbuffer: bytes, images):
    from effnet_tf.export.tflite_runtime import interpreter as tflite_interpreter

    interpreter = tflite_interpreter(model_content=flatbuffer)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(source["index"], [64, *images.shape[1:]])
    interpreter.allocate_tensors()
    out = []
    for i in range(0, len(images), 64):
        batch = images[i:i + 64]
        padded = np.concatenate([batch, np.zeros((64 - len(batch), *batch.shape[1:]), batch.dtype)])
        interpreter.set_tensor(source["index"], padded.astype(source["dtype"]))
        interpreter.invoke()
        out.append(interpreter.get_tensor(target["index"])[:len(batch)].argmax(1))
    return np.concatenate(out)


def raw_statistics_inside_ema(model):
    """Inside ``ema_weights(model)``: puts the raw BN statistics back (EMA weights + raw
    statistics, what an EMA of the trainable weights alone gives); returns an undo function."""
    pairs = model.optimizer.moving_statistics_pairs
    saved = [statistic.numpy().copy() for statistic, _ in pairs]
    for statistic, average in pairs:  # while swapped, the averages hold the raw values
        statistic.assign(average.numpy())

    def undo():
        for (statistic, _), value in zip(pairs, saved):
            statistic.assign(value)

    return undo


def measure(model_dir: str, calibration_count: int):
    from effnet_tf.data import calibration_images
    from effnet_tf.export import prepare
    from effnet_tf.export.tflite import convert_tflite
    from effnet_tf.run.restore import restore_from_model_dir
    from effnet_tf.training.ema import ema_weights

    model, config, _ = restore_from_model_dir(model_dir)
    source, images, labels = eval_set(config)
    row = {"trained": (keras_top1(model, images) == labels).mean()}
    with ema_weights(model):
        undo = raw_statistics_inside_ema(model)
        row["ema_raw_bn"] = (keras_top1(model, images) == labels).mean()
        undo()
        logits = np.concatenate([model(images[i:i + 64], training=False).numpy() for i in range(0, len(images), 64)])
        predictions = logits.argmax(1)
        row["ema_ema_bn"] = (predictions == labels).mean()
        serving = prepare.inference_model(model)
    size = config.eval.image_size
    calibration = calibration_images(source, config.data.train_split, size, calibration_count, seed=config.runtime.seed)
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    clear = margin > np.median(margin)  # the half of the images the float model separates best
    row["median_margin"] = float(np.median(margin))
    tflite = {}
    for quantize in (None, "dynamic_range", "int8", "int16x8"):
        start = time.perf_counter()
        calibrated = quantize in ("int8", "int16x8")
        flatbuffer = convert_tflite(serving, size, quantize, calibration if calibrated else None)
        seconds = time.perf_counter() - start
        top1 = tflite_top1(flatbuffer, images)
        tflite[quantize or "float32"] = dict(
            kib=len(flatbuffer) / 1024, top1=(top1 == labels).mean(), agreement=(top1 == predictions).mean(),
            clear_agreement=(top1 == predictions)[clear].mean(), convert_s=seconds)
    return row, tflite, len(images)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--runs_dir", default="/tmp/effnet_ema_int8")
    parser.add_argument("--calibration", type=int, default=200)
    args = parser.parse_args(argv)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        model_dir = os.path.join(args.runs_dir, f"seed{seed}")
        print(f"seed {seed}: training the demo in {model_dir} ...", flush=True)
        seconds = train_demo(model_dir, seed)
        row, tflite, count = measure(model_dir, args.calibration)
        rows.append((seed, seconds, row, tflite))
        print(f"  done in {seconds:.0f} s", flush=True)

    print(f"\nDemo eval split ({count} images), top-1 by weights used")
    print(f"{'seed':>4}  {'trained':>8}  {'EMA w + raw BN':>14}  {'EMA w + EMA BN':>14}  {'median top-2 logit margin':>26}")
    for seed, _, row, _ in rows:
        print(f"{seed:>4}  {row['trained']:>8.4f}  {row['ema_raw_bn']:>14.4f}  {row['ema_ema_bn']:>14.4f}  "
              f"{row['median_margin']:>26.3f}")
    print(f"\nTFLite files of the exported model (EMA weights + EMA BN), calibration {args.calibration} images")
    print("(agree: top-1 equal to the Keras model's; clear half: on the images whose Keras top-2 logit "
          "margin is above the median)")
    print(f"{'seed':>4}  {'file':<14}{'KiB':>8}{'top-1':>8}{'agree':>8}{'clear half':>12}{'convert s':>11}")
    for seed, _, _, tflite in rows:
        for name, t in tflite.items():
            print(f"{seed:>4}  {name:<14}{t['kib']:>8.0f}{t['top1']:>8.4f}{t['agreement']:>8.4f}"
                  f"{t['clear_agreement']:>12.4f}{t['convert_s']:>11.1f}")
    delta = [row["ema_ema_bn"] - row["ema_raw_bn"] for _, _, row, _ in rows]
    agreement = [tflite["int8"]["agreement"] for _, _, _, tflite in rows]
    print(f"\nEMA BN minus raw BN (top-1): {', '.join(f'{d:+.4f}' for d in delta)}; "
          f"int8 top-1 agreement: {', '.join(f'{a:.4f}' for a in agreement)}")


if __name__ == "__main__":
    main()
