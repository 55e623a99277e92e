"""Peak memory and step time of one train step, with and without gradient checkpointing.

Each arm runs in a fresh process (peak RSS is a process-lifetime maximum, so arms must not
share one): it builds the variant, compiles the recipe's RMSProp train step, runs ``--warmup``
steps (the first one traces and allocates), then times ``--steps`` more. Reported per arm: peak
RSS of the process (``ru_maxrss``), the RSS growth over the idle baseline measured just before
the first step (model, optimizer and TF runtime excluded: what the step itself costs), and the
median step time. The last line gives the ratios.

    python benchmarks/gradient_checkpointing.py --variant=efficientnetv2-s --image_size=224 --batch=16

On a GPU/TPU the same ratios show in device memory; this script measures host memory (CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _rss_mib() -> float:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_arm(args) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    import effnet_tf

    keras.utils.set_random_seed(0)
    model = effnet_tf.build_model(args.variant, num_classes=args.num_classes, classifier_activation=None,
                                  gradient_checkpointing=args.checkpointing)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3, rho=0.9, momentum=0.9, epsilon=1e-3),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True), jit_compile=False)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (args.batch, args.image_size, args.image_size, 3)).astype("float32"))
    labels = tf.one_hot(rng.integers(0, args.num_classes, args.batch), args.num_classes)
    baseline = _rss_mib()
    times = []
    for index in range(args.warmup + args.steps):
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = _peak_rss_mib()
    return dict(checkpointing=args.checkpointing, peak_rss_mib=peak, step_growth_mib=peak - baseline,
                baseline_mib=baseline, step_s=statistics.median(times), params=model.count_params())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="efficientnetv2-s")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--arm", choices=("plain", "checkpointing"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:  # the child process of one arm
        args.checkpointing = args.arm == "checkpointing"
        print(json.dumps(run_arm(args)))
        return
    rows = []
    for arm in ("plain", "checkpointing"):
        command = [sys.executable, os.path.abspath(__file__), f"--arm={arm}", f"--variant={args.variant}",
                   f"--image_size={args.image_size}", f"--batch={args.batch}", f"--num_classes={args.num_classes}",
                   f"--warmup={args.warmup}", f"--steps={args.steps}"]
        print(f"running {arm} arm ...", flush=True)
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    print(f"\n{args.variant} at {args.image_size} px, batch {args.batch}, float32, TF {_tf_version()}")
    print(f"{'arm':<15}{'peak RSS MiB':>14}{'step growth MiB':>17}{'step s':>9}")
    for row in rows:
        name = "checkpointing" if row["checkpointing"] else "plain"
        print(f"{name:<15}{row['peak_rss_mib']:>14.0f}{row['step_growth_mib']:>17.0f}{row['step_s']:>9.2f}")
    plain, checkpointed = rows
    print(f"checkpointing/plain: peak RSS {checkpointed['peak_rss_mib'] / plain['peak_rss_mib']:.2f}, "
          f"step growth {checkpointed['step_growth_mib'] / plain['step_growth_mib']:.2f}, "
          f"step time {checkpointed['step_s'] / plain['step_s']:.2f}")


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


if __name__ == "__main__":
    main()
