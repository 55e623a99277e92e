"""Progressive learning against a fixed image size, where a step's cost grows with its pixels.

Three arms train the same model for the same epochs on the same data (the built-in synthetic
task; ``configs/demo.yaml``'s model unless ``--config`` says otherwise) and are evaluated at the
same epochs (``eval.every_epochs``), at the final size:

* ``staged``: the paper's Algorithm 1, 4 stages from ``--min_size`` to ``--max_size``
  (paper sizing), RandAugment/dropout rising with the size;
* ``random``: a size sampled from the buckets every ``--random_interval`` epochs;
* ``fixed``: every epoch at ``--max_size`` (``progressive.mode=none``).

Each run is the real driver in a fresh process (``python -m effnet_tf.main``), once per seed.
From its ``progress.jsonl`` the script splits the wall time into compile (a new size's first
step minus a typical step), train, eval, stage set-up (a stage's new input pipeline and ``fit``
set-up, up to its first step) and other (process start-up, model build, checkpoints), and reads
the compiled train programs, the accuracy at every evaluation and when the arm first reached the
fixed arm's final top-1 (train time, evaluations excluded).

First it measures this machine's step cost against pixels for the benchmark model (``--steps``
timed ``train_on_batch`` steps per bucket size, after warm-up), which says whether smaller images
can save anything here. It writes a plot (image size and top-1 against train time, per arm) to
``--plot``. The last line reads::

    progressive/fixed wall-time ratio: R (staged), R (random); top-1 staged A, random B, fixed C

where R is wall time without evaluation (the same evaluation work in every arm), median over
seeds, and A, B, C the mean final top-1 over seeds.

    python benchmarks/progressive.py                       # 96 -> 224 px, 32 epochs, seeds 1,2
    python benchmarks/progressive.py --seeds=1 --epochs=8 --params_override=data.train_examples=512

The run recorded in BENCHMARKS.md adds
``--params_override=data.num_classes=14,data.train_examples=8192,data.eval_examples=1024,train.steps_per_epoch=64``
(a task that does not saturate; about 45 minutes on a 2-core CPU). Each run's "other processes'
CPU" (from /proc/stat) tells a slow run caused by a busy machine from one caused by the run itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = {"staged": "staged", "random": "random", "fixed": "none"}


def common_overrides(args) -> str:
    return ",".join(filter(None, [
        f"train.epochs={args.epochs}", f"train.image_size={args.max_size}", f"eval.image_size={args.max_size}",
        f"progressive.min_image_size={args.min_size}", f"progressive.bucket_step={args.bucket_step}",
        "progressive.num_stages=4", "progressive.sizing=paper",
        f"progressive.random_interval_epochs={args.random_interval}", f"eval.every_epochs={args.eval_every}",
        "export.enabled=false", "runtime.tensorboard=false", args.params_override]))


# ---------------------------------------------------------------------------------------------
# Step cost against pixels


def step_cost(args) -> list:
    """``[(size, ms per step)]`` for the benchmark model at every bucket size (in this process)."""
    sys.path.insert(0, REPO)
    import keras
    import numpy as np

    from effnet_tf import config as config_lib
    from effnet_tf.data.buckets import make_buckets
    from effnet_tf.model.from_config import build_from_config
    from effnet_tf.training.plan import make_plan
    from effnet_tf.training.task import attach_optimizer

    config = config_lib.load_yaml_files([os.path.join(REPO, args.config)])
    config_lib.apply_override_string(config, common_overrides(args) + ",runtime.model_dir=null")
    plan = make_plan(config, num_classes=config.data.num_classes, train_examples=config.data.train_examples)
    c = plan.config
    model = build_from_config(c.model)
    attach_optimizer(model, c, plan.steps_per_epoch)
    batch = c.train.global_batch_size
    rows = []
    rng = np.random.default_rng(0)
    for size in make_buckets(args.min_size, args.max_size, args.bucket_step):
        images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
        labels = np.eye(c.model.num_classes, dtype="float32")[rng.integers(0, c.model.num_classes, batch)]
        model.train_function = None  # one program per size, as in training
        for _ in range(2):
            model.train_on_batch(images, labels)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            model.train_on_batch(images, labels)
            times.append(time.perf_counter() - start)
        rows.append((size, 1000 * statistics.median(times)))
    keras.backend.clear_session()
    return rows


# ---------------------------------------------------------------------------------------------
# One run


def busy_cpu_seconds():
    """CPU seconds the whole machine spent outside idle/iowait so far (Linux), or None."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal without idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(arm: str, seed: int, args, model_dir: str) -> dict:
    overrides = f"progressive.mode={ARMS[arm]},runtime.seed={seed}," + common_overrides(args)
    command = [sys.executable, "-m", "effnet_tf.main", f"--config={args.config}", f"--model_dir={model_dir}",
               "--mode=train_and_eval", f"--params_override={overrides}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    busy_before, own_before = busy_cpu_seconds(), children_cpu_seconds()
    started = time.time()
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - started
    # CPU that other processes took from the machine during the run: a busy neighbour shows here
    # (it slows a run without any trace in its own records).
    busy_after, own = busy_cpu_seconds(), children_cpu_seconds() - own_before
    foreign = None if busy_before is None else max(busy_after - busy_before - own, 0.0)
    if completed.returncode != 0:
        raise SystemExit(f"{arm} run failed ({completed.returncode}):\n{completed.stdout[-3000:]}\n"
                         f"{completed.stderr[-3000:]}")
    with open(os.path.join(model_dir, "progress.jsonl")) as handle:
        records = [json.loads(line) for line in handle]
    epochs = [r for r in records if r.get("event") == "epoch"]
    end = [r for r in records if r.get("event") == "run_end"][-1]
    compile_s = sum(r.get("compile_seconds", 0.0) for r in epochs)
    eval_s = sum(r.get("eval_seconds", 0.0) for r in epochs)
    train_s = sum(r.get("train_seconds", 0.0) for r in epochs) - compile_s
    setup_s = sum(r.get("setup_seconds", 0.0) for r in epochs)
    # Step time inside fit per size (epochs without a compile), input pipeline on the same cores.
    step_ms = {}
    for r in epochs:
        if r.get("steps") and r.get("train_seconds") and not r.get("compile_seconds"):
            step_ms.setdefault(r["image_size"], []).append(1000 * r["train_seconds"] / r["steps"])
    # The timeline, evaluations taken out: (train time at the end of the epoch, size, top-1 or None).
    timeline, evaluated = [], 0.0
    for r in epochs:
        at = r["time"] - started - evaluated - r.get("eval_seconds", 0.0)
        evaluated += r.get("eval_seconds", 0.0)
        timeline.append((at, r["image_size"], r.get("val_top1")))
    return {"arm": arm, "seed": seed, "wall": wall, "compile": compile_s, "train": train_s, "eval": eval_s,
            "setup": setup_s, "other": wall - compile_s - train_s - eval_s - setup_s, "top1": end.get("eval_top1"),
            "compiled": end.get("train_functions"), "sizes": sorted({r["image_size"] for r in epochs}),
            "timeline": timeline, "foreign_cpu": foreign, "step_ms": step_ms}


def first_reach(timeline, target: float):
    """Train time (evaluations excluded) at the first evaluation with top-1 >= ``target``."""
    for at, _, top1 in timeline:
        if top1 is not None and top1 >= target - 1e-9:
            return at
    return None


# ---------------------------------------------------------------------------------------------
# Report


def plot(results, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"staged": "tab:blue", "random": "tab:orange", "fixed": "tab:gray"}
    figure, (size_axis, top1_axis) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for run in results:
        style = "-" if run["seed"] == results[0]["seed"] else "--"
        label = f"{run['arm']} (seed {run['seed']})"
        times = [0.0] + [t for t, _, _ in run["timeline"]]
        sizes = [run["timeline"][0][1]] + [s for _, s, _ in run["timeline"]]
        size_axis.step(times, sizes, where="pre", color=colors[run["arm"]], linestyle=style, label=label)
        points = [(t, a) for t, _, a in run["timeline"] if a is not None]
        top1_axis.plot([t for t, _ in points], [a for _, a in points], marker="o", color=colors[run["arm"]],
                       linestyle=style, label=label)
    size_axis.set_ylabel("train image size (px)")
    top1_axis.set_ylabel("eval top-1")
    top1_axis.set_xlabel("train wall-clock time, s (evaluations excluded)")
    size_axis.legend(fontsize=7, ncol=2)
    size_axis.set_title("Progressive learning against a fixed size")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _without_eval(run) -> float:
    """Wall time without evaluation: the quantity the ratios compare."""
    return run["wall"] - run["eval"]


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def report(results, costs, args) -> None:
    if costs:
        print("\nStep cost of the benchmark model on this machine (train_on_batch, median of "
              f"{args.steps} steps after warm-up)")
        print("| size px | ms per step | ms per 100² px | vs largest |")
        print("|---|---|---|---|")
        largest = costs[-1][1]
        for size, ms in costs:
            print(f"| {size} | {ms:.0f} | {ms / (size / 100) ** 2:.0f} | {ms / largest:.2f} |")

    in_fit = {}
    for run in results:
        for size, values in run.get("step_ms", {}).items():
            in_fit.setdefault(int(size), []).extend(values)
    if in_fit:
        largest = statistics.median(in_fit[max(in_fit)])
        print("\nStep time inside fit (median over every run's epochs without a compile; input pipeline "
              "on the same cores)")
        print("| size px | ms per step | vs largest | epochs |")
        print("|---|---|---|---|")
        for size in sorted(in_fit):
            ms = statistics.median(in_fit[size])
            print(f"| {size} | {ms:.0f} | {ms / largest:.2f} | {len(in_fit[size])} |")

    by_arm = {arm: [r for r in results if r["arm"] == arm] for arm in args.arms}
    fixed = {r["seed"]: r for r in by_arm.get("fixed", [])}

    def med(arm, key):
        return statistics.median(r[key] for r in by_arm[arm])

    print(f"\nconfig={args.config} epochs={args.epochs} sizes {args.min_size}->{args.max_size} "
          f"seeds={args.seeds} overrides={common_overrides(args)!r}")
    print("| arm | sizes trained | compiled programs | wall s | compile s | train s | eval s | stage set-up s | other s "
          "| wall without eval, vs fixed (per seed) | final top-1 per seed | mean top-1 | train s to fixed's final top-1 "
          "| other processes' CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ratios, means = {}, {}
    for arm, runs in by_arm.items():
        base = statistics.median(_without_eval(r) for r in by_arm["fixed"]) if "fixed" in by_arm else None
        ratio = (statistics.median(_without_eval(r) for r in runs) / base) if base else float("nan")
        ratios[arm] = ratio
        per_seed = [f"{_without_eval(r) / _without_eval(fixed[r['seed']]):.2f}" for r in runs if r["seed"] in fixed]
        top1 = [r["top1"] for r in runs]
        means[arm] = statistics.mean(top1)
        reach = []
        for r in runs:
            target = fixed.get(r["seed"])
            at = first_reach(r["timeline"], target["top1"]) if target else None
            reach.append("never" if at is None else f"{at:.0f}")
        sizes = sorted({s for r in runs for s in r["sizes"]})
        print(f"| {arm} | {sizes} | {', '.join(str(r['compiled']) for r in runs)} | {med(arm, 'wall'):.0f} | "
              f"{med(arm, 'compile'):.0f} | {med(arm, 'train'):.0f} | {med(arm, 'eval'):.0f} | {med(arm, 'setup'):.0f} | "
              f"{med(arm, 'other'):.0f} | "
              f"{ratio:.2f} ({', '.join(per_seed)}) | {', '.join(f'{t:.4f}' for t in top1)} | {means[arm]:.4f} | {', '.join(reach)} | "
              f"{', '.join(_seconds(r['foreign_cpu']) for r in runs)} |")
    print(f"(medians over seeds; seed spread of the fixed arm's top-1: "
          f"{max(r['top1'] for r in by_arm['fixed']) - min(r['top1'] for r in by_arm['fixed']):.4f})"
          if "fixed" in by_arm else "")
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    print(f"progressive/fixed wall-time ratio: {ratios.get('staged', float('nan')):.2f} (staged), "
          f"{ratios.get('random', float('nan')):.2f} (random); top-1 staged {means.get('staged', float('nan')):.4f}, "
          f"random {means.get('random', float('nan')):.4f}, fixed {means.get('fixed', float('nan')):.4f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--min_size", type=int, default=96)
    parser.add_argument("--max_size", type=int, default=224)
    parser.add_argument("--bucket_step", type=int, default=32)
    parser.add_argument("--random_interval", type=int, default=4,
                        help="epochs between random sizes (the paper: 8 of 350 epochs)")
    parser.add_argument("--eval_every", type=int, default=4)
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--arms", default="staged,random,fixed")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per size for the step-cost curve")
    parser.add_argument("--no_step_cost", action="store_true")
    parser.add_argument("--plot", default=os.path.join(REPO, "docs", "images", "progressive_benchmark.png"))
    parser.add_argument("--params_override", default="", help="extra overrides for every run")
    parser.add_argument("--keep", default="", help="directory to keep the runs' progress.jsonl and results in")
    args = parser.parse_args(argv)
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"--arms: unknown {unknown}; choose from {list(ARMS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.plot:
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)

    costs = [] if args.no_step_cost else step_cost(args)
    for size, ms in costs:
        print(f"# step cost at {size} px: {ms:.0f} ms", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            tmp = args.keep
        for seed in seeds:
            for arm in args.arms:  # arms alternate within a seed, so drift hits all of them alike
                run = run_once(arm, seed, args, os.path.join(tmp, f"{arm}-{seed}"))
                results.append(run)
                print(f"# {arm} seed {seed}: {run['wall']:.0f} s (compile {run['compile']:.0f}, train "
                      f"{run['train']:.0f}, eval {run['eval']:.0f}, stage set-up {run['setup']:.0f}, other "
                      f"{run['other']:.0f}), top-1 {run['top1']}, {run['compiled']} compiled, sizes {run['sizes']}, other "
                      f"processes' CPU {_seconds(run['foreign_cpu'])} s",
                      flush=True)
                if args.keep:
                    with open(os.path.join(args.keep, f"{arm}-{seed}.json"), "w") as handle:
                        json.dump(run, handle)
    report(results, costs, args)


if __name__ == "__main__":
    main()
