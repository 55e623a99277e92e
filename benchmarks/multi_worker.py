"""Several workers and preemption on one machine: throughput of 1 vs 2 workers, and SIGTERM.

Part A runs the demo model (``configs/demo.yaml``, fixed 64 px, same global batch) as one
process and as two MultiWorkerMirroredStrategy workers on 127.0.0.1 (``TF_CONFIG``), and reads
images/second of the epochs after the first (compile excluded) from ``progress.jsonl``.
On one small machine two workers share the same cores, so this measures the cost of the
cross-worker all-reduces and the per-step preemption check, not a speed-up.

Part B sends SIGTERM to a single-process run and to one of two workers mid-epoch and reports
the seconds from the signal to the exit of every process, the exit code, and the steps lost
(global step of the signal's next boundary minus the latest checkpoint; goal 0).

    python benchmarks/multi_worker.py                  # both parts
    python benchmarks/multi_worker.py --parts A --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREEMPTED = 75


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(workers: int, model_dir: str, overrides: str, config: str):
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(workers)]}
    processes = []
    for index in range(workers):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
        env.pop("TF_CONFIG", None)
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        command = [sys.executable, "-m", "effnet_tf.main", f"--config={config}", f"--model_dir={model_dir}",
                   "--mode=train", f"--params_override={overrides}"]
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    return processes


def _stop(processes) -> None:
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _progress(model_dir: str):
    with open(os.path.join(model_dir, "progress.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def throughput(workers: int, epochs: int, config: str, tmp: str) -> float:
    model_dir = os.path.join(tmp, f"throughput-{workers}")
    overrides = (f"train.epochs={epochs},progressive.mode=none,train.steps_per_epoch=40,export.enabled=false,"
                 "runtime.tensorboard=false,runtime.verbose=0")
    processes = _launch(workers, model_dir, overrides, config)
    try:
        for process in processes:
            output, _ = process.communicate(timeout=1800)
            if process.returncode != 0:
                raise SystemExit(f"{workers}-worker run failed ({process.returncode}):\n{output[-3000:]}")
    finally:
        _stop(processes)
    rates = [r["images_per_second"] for r in _progress(model_dir) if r["event"] == "epoch"][1:]
    return statistics.median(rates)


def preemption(workers: int, config: str, tmp: str) -> dict:
    model_dir = os.path.join(tmp, f"sigterm-{workers}")
    overrides = "train.epochs=4,train.steps_per_epoch=40,export.enabled=false,runtime.tensorboard=false,runtime.verbose=0"
    processes = _launch(workers, model_dir, overrides, config)
    try:
        deadline = time.time() + 900
        while time.time() < deadline:  # mid-epoch in the second epoch
            steps = [r for r in (_progress(model_dir) if os.path.exists(os.path.join(model_dir, "progress.jsonl"))
                                 else []) if r["event"] == "epoch"]
            if steps:
                break
            time.sleep(0.2)
        time.sleep(2.0)
        sent = time.time()
        processes[-1].send_signal(signal.SIGTERM)
        outputs, exits = [], []
        for process in processes:
            output, _ = process.communicate(timeout=300)
            exits.append(time.time() - sent)
            outputs.append(output)
    finally:
        _stop(processes)
    stopped = [int(m.group(1)) for m in (re.search(r"stopped at global step (\d+)", o) for o in outputs) if m]
    index = open(os.path.join(model_dir, "checkpoints", "checkpoint")).read()
    latest = int(re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', index, re.M).group(1))
    return {"codes": [p.returncode for p in processes], "seconds": max(exits),
            "stopped": stopped, "lost": (max(stopped) - latest) if stopped else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--epochs", type=int, default=4, help="part A: epochs of 40 steps (the first is not timed)")
    parser.add_argument("--parts", default="A,B")
    args = parser.parse_args(argv)
    parts = set(args.parts.upper().split(","))
    with tempfile.TemporaryDirectory() as tmp:
        if "A" in parts:
            one, two = throughput(1, args.epochs, args.config, tmp), throughput(2, args.epochs, args.config, tmp)
            print("| workers | images/s (median of epochs 2..) |\n|---|---|")
            print(f"| 1 | {one:.1f} |\n| 2 | {two:.1f} |")
            print(f"two-worker / one-worker images/s: {two / one:.2f}\n")
        if "B" in parts:
            print("| SIGTERM to | exit codes | seconds to exit (all) | stopped at step | steps lost |\n|---|---|---|---|---|")
            for workers, label in ((1, "single process"), (2, "worker 1 of 2")):
                r = preemption(workers, args.config, tmp)
                print(f"| {label} | {r['codes']} | {r['seconds']:.1f} | {r['stopped']} | {r['lost']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
