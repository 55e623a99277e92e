"""Train-step and inference throughput: effnet_tf against keras.applications, side by side.

Both models are the same variant at the same image size, batch and precision, built with
random weights. After warm-up the script alternates A/B timing blocks in one process (the
order flips every repeat; these machines are noisy) and reports the median images/second of
each, the median of the per-repeat paired ratios, and the time of the first (compiling) step.

A timing block is one ``model.fit`` (or ``model.predict``) call over ``--steps`` batches, which
is how users run models. ``--loop=on_batch`` times ``train_on_batch`` calls instead; on the
JAX backend those pay Keras' per-call state sync, which can hide the compute (measured on an
H100: predict_on_batch of V2-B0 at 224 px ran 3-4x slower than the jitted call itself).

On TensorFlow the fit loop reads a ``tf.data`` dataset with autotuning off. Measured on the
project's 2-core VM: with autotuning on (as for NumPy input, which Keras wraps in an autotuned
dataset) a training step ran at single-core speed in about half the timing blocks, at random
and for either model, which made ratios bimodal (0.63 to 1.97 for the same models); with it off
the rate was stable.

Runs on any Keras backend: TensorFlow here, JAX on a GPU machine (KERAS_BACKEND=jax).

    python benchmarks/train_step.py --variants=efficientnetv2-b0 --image_size=128 --batch=32
    python benchmarks/train_step.py --variants=efficientnet-b0 --no_fused_bn   # ablation
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
from effnet_tf.blocks.batch_norm import fused_batch_norm  # noqa: E402


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


def make_fit_input(x, y, batch):
    """What one fit/predict timing block reads: (fit kwargs, predict kwargs)."""
    if keras.backend.backend() != "tensorflow":
        return {"x": x, "y": y, "batch_size": batch, "shuffle": False}, {"x": x, "batch_size": batch}
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False  # see the module docstring: autotuning made CPU rates bimodal
    steps = len(x) // batch
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)
    infer = tf.data.Dataset.from_tensor_slices(x).batch(batch, drop_remainder=True)
    return ({"x": train.cache().repeat().with_options(options), "steps_per_epoch": steps},
            {"x": infer.cache().repeat().with_options(options), "steps": steps})


def train_block(model, data, loop, steps=1):
    if loop == "fit":
        history = model.fit(**data["fit"], epochs=1, verbose=0)
        return history.history["loss"][-1]
    for _ in range(steps):
        loss = model.train_on_batch(data["x1"], data["y1"])
    return _sync(loss)


def infer_block(model, data, loop, steps=1):
    if loop == "fit":
        return model.predict(**data["predict"], verbose=0)
    for _ in range(steps):
        out = model.predict_on_batch(data["x1"])
    return _sync(out)


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


def benchmark(variant, image_size, batch, jit_compile, steps, repeats, warmup, num_classes,
              keras_first=False, loop="fit"):
    ours, reference = build_pair(variant, image_size, num_classes)
    rng = np.random.default_rng(0)
    n = batch * (steps if loop == "fit" else 1)
    x = rng.uniform(0, 255, (n, image_size, image_size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, num_classes, n), num_classes)
    fit_kwargs, predict_kwargs = make_fit_input(x, y, batch)
    data = {"fit": fit_kwargs, "predict": predict_kwargs, "x1": x[:batch], "y1": y[:batch]}
    results = {}
    models = {"effnet_tf": ours, "keras.applications": reference}
    if keras_first:
        models = dict(reversed(list(models.items())))
    first_peak = None
    for name, model in models.items():
        compile_model(model, jit_compile)
        start = time.perf_counter()
        _sync(model.train_on_batch(data["x1"], data["y1"]))
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        _sync(model.predict_on_batch(data["x1"]))
        infer_compile_s = time.perf_counter() - start
        for _ in range(warmup):
            train_block(model, data, loop)
            infer_block(model, data, loop)
        results[name] = {"train": [], "infer": [], "compile_s": compile_s, "infer_compile_s": infer_compile_s}
        if first_peak is None:  # only the first model's peak is clean: device peaks cannot be reset
            first_peak = (name, peak_memory_gib())
    order = list(models.items())
    for _ in range(repeats):  # alternate A/B, flipping the order, so drift hits both alike
        for name, model in order:
            start = time.perf_counter()
            train_block(model, data, loop, steps)
            results[name]["train"].append(steps * batch / (time.perf_counter() - start))
            start = time.perf_counter()
            infer_block(model, data, loop, steps)
            results[name]["infer"].append(steps * batch / (time.perf_counter() - start))
        order.reverse()
    ours_r, ref_r = results["effnet_tf"], results["keras.applications"]
    paired = {kind: statistics.median(a / b for a, b in zip(ours_r[kind], ref_r[kind]))
              for kind in ("train", "infer")}
    return {
        name: {
            "train_ips": statistics.median(r["train"]),
            "infer_ips": statistics.median(r["infer"]),
            "compile_s": r["compile_s"],
            "infer_compile_s": r["infer_compile_s"],
        }
        for name, r in results.items()
    }, paired, first_peak


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
    parser.add_argument("--loop", default="fit", choices=["fit", "on_batch"],
                        help="fit: one fit/predict call per timing block; on_batch: *_on_batch calls")
    parser.add_argument("--no_fused_bn", action="store_true",
                        help="ablation: run ours with Keras' own BatchNormalization ops")
    parser.add_argument("--keras_first", action="store_true",
                        help="warm keras.applications up first (its peak memory is then the clean one)")
    args = parser.parse_args(argv)

    keras.mixed_precision.set_global_policy(args.precision)
    with fused_batch_norm(not args.no_fused_bn):
        run_benchmarks(args)


def run_benchmarks(args):
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    print(f"backend={keras.backend.backend()} keras={keras.__version__} precision={args.precision} "
          f"jit_compile={args.jit_compile} image_size={args.image_size} batch={args.batch} "
          f"steps={args.steps} repeats={args.repeats} loop={args.loop} fused_bn={not args.no_fused_bn}")
    header = (f"| variant | model | train img/s | infer img/s | first train step s | first predict s |"
              f" train ratio (ours/keras, paired median) | infer ratio |")
    print(header)
    print("|" + "---|" * 8)
    for variant in args.variants.split(","):
        rows, paired, peak = benchmark(variant.strip(), args.image_size, args.batch, jit, args.steps,
                               args.repeats, args.warmup, args.num_classes, args.keras_first, args.loop)
        for name, r in rows.items():
            ratio_train = paired["train"] if name == "effnet_tf" else 1.0
            ratio_infer = paired["infer"] if name == "effnet_tf" else 1.0
            print(f"| {variant} | {name} | {r['train_ips']:.1f} | {r['infer_ips']:.1f} | "
                  f"{r['compile_s']:.1f} | {r['infer_compile_s']:.1f} | {ratio_train:.3f} | {ratio_infer:.3f} |")
        if peak and peak[1] == peak[1]:  # not NaN
            print(f"| {variant} | peak device memory of {peak[0]} alone (GiB) | {peak[1]:.2f} | | | | | |")
        keras.backend.clear_session()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
