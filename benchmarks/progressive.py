"""Progressive learning against a fixed image size: wall time, final accuracy, compile count.

Both runs train the same model for the same number of epochs on the built-in synthetic data
(``configs/demo.yaml`` unless ``--config`` says otherwise); one with ``progressive.mode=staged``
(sizes rise to the final size while regularization rises), one with ``progressive.mode=none``
(every epoch at the final size). Each run is the real driver in a fresh process
(``python -m effnet_tf.main``); with ``--repeats`` > 1 the runs alternate. The table gives the
median wall time of each, their ratio, the final eval accuracy (EMA weights, eval size) and
the number of compiled train functions, read from ``model_dir/progress.jsonl``.

    python benchmarks/progressive.py                       # demo.yaml, 8 epochs
    python benchmarks/progressive.py --epochs=4 --params_override=data.train_examples=2048
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(mode: str, config: str, epochs: int, extra: str, model_dir: str) -> dict:
    overrides = f"progressive.mode={mode},train.epochs={epochs},export.enabled=false"
    if extra:
        overrides += "," + extra
    command = [sys.executable, "-m", "effnet_tf.main", f"--config={config}", f"--model_dir={model_dir}",
               "--mode=train_and_eval", f"--params_override={overrides}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"{mode} run failed ({completed.returncode}):\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    records = [json.loads(line) for line in open(os.path.join(model_dir, "progress.jsonl"))]
    end = [r for r in records if r.get("event") == "run_end"][-1]
    sizes = sorted({r["image_size"] for r in records if r.get("event") == "stage"})
    return {"seconds": seconds, "top1": end.get("eval_top1"), "compiled": end.get("train_functions"),
            "sizes": sizes}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--params_override", default="", help="extra overrides for both runs")
    args = parser.parse_args(argv)

    results = {"staged": [], "none": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for mode in ("staged", "none"):
                model_dir = os.path.join(tmp, f"{mode}-{repeat}")
                results[mode].append(run_once(mode, args.config, args.epochs, args.params_override, model_dir))
                r = results[mode][-1]
                print(f"# {mode} run {repeat + 1}: {r['seconds']:.1f} s, top-1 {r['top1']}, "
                      f"{r['compiled']} compiled, sizes {r['sizes']}", flush=True)

    def med(mode, key):
        return statistics.median(r[key] for r in results[mode])

    print(f"\nconfig={args.config} epochs={args.epochs} repeats={args.repeats} overrides={args.params_override!r}")
    print("| schedule | image sizes | wall time s | time ratio (vs fixed) | final top-1 | compiled train functions |")
    print("|---|---|---|---|---|---|")
    fixed = med("none", "seconds")
    for mode, label in (("staged", "progressive (staged)"), ("none", "fixed at final size")):
        print(f"| {label} | {results[mode][0]['sizes']} | {med(mode, 'seconds'):.1f} | "
              f"{med(mode, 'seconds') / fixed:.2f} | {med(mode, 'top1'):.4f} | {results[mode][0]['compiled']} |")


if __name__ == "__main__":
    main()
