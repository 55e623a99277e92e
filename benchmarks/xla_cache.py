"""What XLA's persistent compilation cache saves when a ``jit_compile`` run starts again.

A resumed run (after preemption, or a later run with the same model and sizes) compiles each
image size's train program again. With ``TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=DIR``
TensorFlow writes every XLA-compiled program to DIR and, in a later process, loads it instead of
compiling (it checks the loaded program against the new one's HLO first). This script measures
the first train step (trace + compile or load) of ``configs/demo.yaml``'s model with
``jit_compile`` in fresh processes: without the cache, with an empty cache (the first run, which
writes it) and with the cache the first run wrote (the resumed run), and counts the programs
TensorFlow reports loading from the cache. On TPU the compile goes through the TPU runtime, not
this cache.

    python benchmarks/xla_cache.py                   # 64 px, batch 32
    python benchmarks/xla_cache.py --sizes=64,128
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_ONE_PROCESS = """
import sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from effnet_tf import config as config_lib
from effnet_tf.model.from_config import build_from_config
from effnet_tf.training.plan import make_plan
from effnet_tf.training.task import attach_optimizer

config = config_lib.load_yaml_files([{config!r}])
config_lib.apply_override_string(config, "runtime.jit_compile=true,runtime.model_dir=null,progressive.mode=none")
plan = make_plan(config, num_classes=config.data.num_classes, train_examples=config.data.train_examples)
model = build_from_config(plan.config.model)
attach_optimizer(model, plan.config, plan.steps_per_epoch, jit_compile=True)
batch, size = plan.config.train.global_batch_size, {size}
images = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
labels = np.eye(plan.config.model.num_classes, dtype="float32")[np.zeros(batch, int)]
start = time.perf_counter(); model.train_on_batch(images, labels); first = time.perf_counter() - start
steps = []
for _ in range(3):
    start = time.perf_counter(); model.train_on_batch(images, labels); steps.append(time.perf_counter() - start)
print(f"RESULT first={{first:.2f}} step={{min(steps):.4f}}", flush=True)
"""


def one_process(size: int, config: str, cache_dir: str = "") -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="device_executable_persistor=2")
    env.pop("TF_XLA_FLAGS", None)
    if cache_dir:
        env["TF_XLA_FLAGS"] = f"--tf_xla_persistent_cache_directory={cache_dir}"
    code = _ONE_PROCESS.format(repo=REPO, config=os.path.join(REPO, config), size=size)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800)
    found = re.search(r"RESULT first=([\d.]+) step=([\d.]+)", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"benchmark process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {"first_s": float(found.group(1)), "step_ms": 1000 * float(found.group(2)),
            "loaded": done.stderr.count("Loading cached entry for:"),
            "files": len(os.listdir(cache_dir)) if cache_dir else 0}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--sizes", default="64", help="comma-separated image sizes")
    args = parser.parse_args(argv)
    print("| size px | run | first step s (trace + compile or load) | later step ms | programs loaded "
          "from the cache | files in the cache |")
    print("|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as cache_dir:
            runs = [("no cache", one_process(size, args.config)),
                    ("empty cache (first run)", one_process(size, args.config, cache_dir)),
                    ("warm cache (resumed run)", one_process(size, args.config, cache_dir))]
            for name, r in runs:
                print(f"| {size} | {name} | {r['first_s']:.1f} | {r['step_ms']:.0f} | {r['loaded']} | "
                      f"{r['files'] if name != 'no cache' else '-'} |", flush=True)
            saved = runs[1][1]["first_s"] - runs[2][1]["first_s"]
            print(f"xla cache at {size} px: first step {runs[1][1]['first_s']:.1f} s -> "
                  f"{runs[2][1]['first_s']:.1f} s with the warm cache ({saved:.1f} s saved per program)",
                  flush=True)


if __name__ == "__main__":
    main()
