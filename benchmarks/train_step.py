"""Train-step and inference throughput: effnet_tf against keras.applications, side by side.

Both models are the same variant at the same image size, batch and precision, built with
random weights. After warm-up the script alternates A/B/A/B timing blocks in one process
(these machines are noisy) and reports the median images/second of each and their ratio,
plus the time of the first (compiling) step.

Runs on any Keras backend: TensorFlow here, JAX on a GPU machine (KERAS_BACKEND=jax).

    python benchmarks/train_step.py --variants=efficientnetv2-b0 --image_size=128 --batch=32
    KERAS_BACKEND=jax python benchmarks/train_step.py --variants=efficientnetv2-s \
        --image_size=300 --batch=128 --precision=mixed_bfloat16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import effnet_tf  # noqa: E402


def build_pair(variant: str, image_size: int, num_classes: int):
    spec = effnet_tf.get_variant(variant)
    if not spec.keras_application:
        raise SystemExit(f"keras.applications has no {variant}; choose one of its variants.")
    ours = effnet_tf.build_model(variant, num_classes=num_classes)
    reference = getattr(keras.applications, spec.keras_application)(
        weights=None, input_shape=(image_size, image_size, 3), classes=num_classes
    )
    return ours, reference


def compile_model(model, jit_compile):
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3, rho=0.9, momentum=0.9, epsilon=1e-3),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        jit_compile=jit_compile,
    )


def _sync(value):
    # Pulling the loss to the host waits for the device, so timings include the whole step.
    return float(np.asarray(value).ravel()[0])


def time_block(step, steps):
    start = time.perf_counter()
    for _ in range(steps):
        result = step()
    _sync(result)
    return time.perf_counter() - start


def peak_memory_gib():
    try:
        if keras.backend.backend() == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use", 0) / 2**30
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    except Exception:  # noqa: BLE001 — memory stats are best-effort extras
        pass
    return float("nan")


def benchmark(variant, image_size, batch, jit_compile, steps, repeats, warmup, num_classes):
    ours, reference = build_pair(variant, image_size, num_classes)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, image_size, image_size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, num_classes, batch), num_classes)
    results = {}
    models = {"effnet_tf": ours, "keras.applications": reference}
    for name, model in models.items():
        compile_model(model, jit_compile)
        start = time.perf_counter()
        _sync(model.train_on_batch(x, y))
        compile_s = time.perf_counter() - start
        for _ in range(warmup):
            model.train_on_batch(x, y)
        start = time.perf_counter()
        _sync(model.predict_on_batch(x))
        infer_compile_s = time.perf_counter() - start
        results[name] = {"train": [], "infer": [], "compile_s": compile_s, "infer_compile_s": infer_compile_s}
    for _ in range(repeats):  # alternate A/B so drift in machine speed hits both alike
        for name, model in models.items():
            seconds = time_block(lambda: model.train_on_batch(x, y), steps)
            results[name]["train"].append(steps * batch / seconds)
            seconds = time_block(lambda: model.predict_on_batch(x), steps)
            results[name]["infer"].append(steps * batch / seconds)
    peak = peak_memory_gib()
    return {
        name: {
            "train_ips": statistics.median(r["train"]),
            "infer_ips": statistics.median(r["infer"]),
            "compile_s": r["compile_s"],
            "infer_compile_s": r["infer_compile_s"],
        }
        for name, r in results.items()
    }, peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="efficientnetv2-b0,efficientnetv2-s,efficientnet-b0")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--jit_compile", default="auto", choices=["auto", "true", "false"],
                        help="auto: the backend's default (off on TF, always XLA on JAX)")
    parser.add_argument("--steps", type=int, default=5, help="steps per timing block")
    parser.add_argument("--repeats", type=int, default=5, help="A/B timing blocks per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num_classes", type=int, default=1000)
    args = parser.parse_args(argv)

    keras.mixed_precision.set_global_policy(args.precision)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    print(f"backend={keras.backend.backend()} keras={keras.__version__} precision={args.precision} "
          f"jit_compile={args.jit_compile} image_size={args.image_size} batch={args.batch} "
          f"steps={args.steps} repeats={args.repeats}")
    header = (f"| variant | model | train img/s | infer img/s | first train step s | first predict s |"
              f" train ratio (ours/keras) | infer ratio |")
    print(header)
    print("|" + "---|" * 8)
    for variant in args.variants.split(","):
        rows, peak = benchmark(variant.strip(), args.image_size, args.batch, jit, args.steps,
                               args.repeats, args.warmup, args.num_classes)
        ours, ref = rows["effnet_tf"], rows["keras.applications"]
        for name, r in rows.items():
            ratio_train = ours["train_ips"] / ref["train_ips"] if name == "effnet_tf" else 1.0
            ratio_infer = ours["infer_ips"] / ref["infer_ips"] if name == "effnet_tf" else 1.0
            print(f"| {variant} | {name} | {r['train_ips']:.1f} | {r['infer_ips']:.1f} | "
                  f"{r['compile_s']:.1f} | {r['infer_compile_s']:.1f} | {ratio_train:.3f} | {ratio_infer:.3f} |")
        if peak == peak:  # not NaN
            print(f"| {variant} | peak device memory (both models, GiB) | {peak:.2f} | | | | | |")
        keras.backend.clear_session()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
