"""effnet-train against a plain Keras ``model.fit`` on real image folders nobody on the project made.

Datasets (written once as image folders under ``--data_root``, from data that ship inside the
wheels, so nothing is downloaded):

* ``digits``: the UCI handwritten digits of scikit-learn (1,797 scans of 8x8 pixels, 17 grey
  levels, 10 classes). Each scan is scaled to 0..255 and upsampled to 32x32 with bicubic
  interpolation (PIL), which turns the blocky 8x8 grid into smooth strokes such as a camera would
  give, then saved as an RGB PNG; 300 scans (a fixed random draw) form the validation split,
  1,497 the training split. Trained and evaluated at ``--image_size`` (64).
* ``photos``: which of 10 scikit-image photographs (brick, grass, gravel, camera, coins, moon,
  cell, chelsea, coffee, astronaut; colour ones converted to grey) a patch comes from. Patches
  of 40-96 px at random places, resized to 48x48: 150 per class from the left 75% of each photo
  for training, 30 per class from the right 25% for validation (no pixel in both).

Arms, each in a fresh process, at the same network, epochs and image size:

* ``effnet-train`` with no ``--config`` (the budget-scaled default recipe);
* ``effnet-train --config=configs/demo.yaml`` (its network replaced by the benchmark's);
* ``plain fit (ours)``: ``effnet_tf.build_model`` + Adam(1e-3) + ``model.fit``, batch 32, no
  augmentation, ``keras.utils.image_dataset_from_directory`` at the image size (bilinear resize
  of the whole image), categorical cross-entropy, the last epoch's validation accuracy;
* ``plain fit (keras.applications)``: the same with ``keras.applications.EfficientNetV2B0``
  (``weights=None``; only for the full-size V2-B0).

    python benchmarks/real_data.py                                  # both datasets, seeds 1,2, 15 epochs
    python benchmarks/real_data.py --datasets=digits --seeds=1 --arms=default,plain

Needs the benchmarks extra (scikit-learn, scikit-image, pillow). The last line reads::

    real data (DATASET): effnet-train default A (mean of seeds), demo config B, plain fit C, keras.applications D
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
ARMS = ("default", "demo", "plain", "keras")
ARM_NAMES = {"default": "effnet-train (no config)", "demo": "effnet-train --config=demo.yaml",
             "plain": "plain fit (ours)", "keras": "plain fit (keras.applications)"}
PHOTOS = ("brick", "grass", "gravel", "camera", "coins", "moon", "cell", "chelsea", "coffee", "astronaut")


# ---------------------------------------------------------------------------------------------
# Data


def write_digits(root: str) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    validation = set(order[:300].tolist())
    for index, (scan, label) in enumerate(zip(digits.images, digits.target)):
        split = "validation" if index in validation else "train"
        folder = os.path.join(root, split, str(label))
        os.makedirs(folder, exist_ok=True)
        pixels = (scan / 16.0 * 255.0).astype(np.uint8)
        image = Image.fromarray(pixels).resize((32, 32), Image.BICUBIC).convert("RGB")
        image.save(os.path.join(folder, f"{index:04d}.png"))


def write_photos(root: str) -> None:
    import numpy as np
    import skimage.data
    from PIL import Image
    from skimage.color import rgb2gray

    rng = np.random.default_rng(0)
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        if photo.ndim == 3:
            photo = (rgb2gray(photo) * 255).astype(np.uint8)
        height, width = photo.shape
        cut = int(width * 0.75)
        for split, (x0, x1), count in (("train", (0, cut), 150), ("validation", (cut, width), 30)):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                side = int(rng.integers(40, 97))
                y, x = int(rng.integers(0, height - side)), int(rng.integers(x0, x1 - side))
                patch = Image.fromarray(photo[y:y + side, x:x + side]).resize((48, 48), Image.BILINEAR)
                patch.convert("RGB").save(os.path.join(folder, f"{i:03d}.png"))


WRITERS = {"digits": write_digits, "photos": write_photos}


def dataset_dir(root: str, name: str) -> str:
    path = os.path.join(root, name)
    if not os.path.isdir(os.path.join(path, "validation")):
        partial = path + ".partial"
        subprocess.run(["rm", "-rf", partial], check=True)
        WRITERS[name](partial)
        os.replace(partial, path)
    return path


# ---------------------------------------------------------------------------------------------
# Arms


def trainer_command(args, arm: str, data: str, seed: int, model_dir: str) -> list:
    overrides = [f"data.name=folder:{data}", f"train.epochs={args.epochs}", f"train.image_size={args.image_size}",
                 f"eval.image_size={args.image_size}", f"runtime.seed={seed}", "export.enabled=false",
                 "runtime.verbose=0", "runtime.tensorboard=false", f"model.width={args.width}",
                 f"model.depth={args.depth}", f"model.name={args.model}"]
    command = [sys.executable, "-m", "effnet_tf.main", f"--model_dir={model_dir}"]
    if arm == "demo":
        command.append(f"--config={os.path.join(REPO, 'configs', 'demo.yaml')}")
        # The demo names the synthetic source's sizes; a folder says its own.
        overrides += ["data.num_classes=null", "data.train_examples=null", "data.eval_examples=null"]
    if args.params_override:
        overrides.append(args.params_override)
    return command + ["--params_override=" + ",".join(overrides)]


PLAIN_FIT = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
data, seed, epochs, size, model_name, width, depth, which = sys.argv[1:9]
seed, epochs, size, width, depth = int(seed), int(epochs), int(size), float(width), float(depth)
keras.utils.set_random_seed(seed)
kw = dict(image_size=(size, size), batch_size=32, label_mode="categorical", seed=seed, verbose=False)
train = keras.utils.image_dataset_from_directory(os.path.join(data, "train"), shuffle=True, **kw)
val = keras.utils.image_dataset_from_directory(os.path.join(data, "validation"), shuffle=False, **kw)
classes = len(train.class_names)
if which == "keras":
    model = keras.applications.EfficientNetV2B0(weights=None, classes=classes, input_shape=(size, size, 3))
else:
    import effnet_tf
    model = effnet_tf.build_model(model_name, num_classes=classes, width=width, depth=depth)
model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", metrics=["accuracy"])
history = model.fit(train, epochs=epochs, validation_data=val, verbose=0)
print("RESULT " + json.dumps({"top1": history.history["val_accuracy"][-1]}))
"""


def run_arm(args, arm: str, data: str, seed: int, work: str) -> dict:
    """``{"top1", "seconds"}`` of one arm and seed (a fresh process)."""
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if arm in ("default", "demo"):
        model_dir = os.path.join(work, f"{os.path.basename(data)}_{arm}_{seed}")
        subprocess.run(["rm", "-rf", model_dir], check=True)
        out = subprocess.run(trainer_command(args, arm, data, seed, model_dir), cwd=REPO, env=env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{arm} seed {seed} failed ({out.returncode}):\n{out.stderr[-3000:]}")
        with open(os.path.join(model_dir, "progress.jsonl")) as handle:
            records = [json.loads(line) for line in handle]
        end = [r for r in records if r.get("event") == "run_end"][-1]
        health = [r["check"] for r in records if r.get("event") == "health"]
        return {"top1": end["eval_top1"], "seconds": time.perf_counter() - start, "health": health,
                "recipe": [line for line in out.stdout.splitlines() if line.startswith(("Recipe", "Regularization"))]}
    out = subprocess.run([sys.executable, "-c", PLAIN_FIT, data, str(seed), str(args.epochs), str(args.image_size),
                          args.model, str(args.width), str(args.depth), arm], cwd=REPO, env=env,
                         capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{arm} seed {seed} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return {"top1": json.loads(lines[-1][7:])["top1"], "seconds": time.perf_counter() - start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="digits,photos")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--model", default="efficientnetv2-b0")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--depth", type=float, default=1.0)
    parser.add_argument("--params_override", default="", help="added to both effnet-train arms")
    parser.add_argument("--data_root", default=os.path.join(tempfile.gettempdir(), "effnet_real_data"))
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = [a for a in args.arms.split(",") if a]
    if "keras" in arms and (args.model != "efficientnetv2-b0" or args.width != 1.0 or args.depth != 1.0):
        arms.remove("keras")  # keras.applications has the published network only
        print("keras.applications arm skipped: it has only the full-size efficientnetv2-b0")
    work = os.path.join(args.data_root, "runs")
    os.makedirs(work, exist_ok=True)
    results = {}
    for name in args.datasets.split(","):
        data = dataset_dir(args.data_root, name)
        for arm in arms:
            for seed in seeds:
                result = run_arm(args, arm, data, seed, work)
                results.setdefault(name, {}).setdefault(arm, {})[seed] = result
                print(f"{name:7s} {ARM_NAMES[arm]:34s} seed {seed}: top-1 {result['top1']:.4f} "
                      f"({result['seconds']:.0f} s){'  health: ' + ', '.join(result['health']) if result.get('health') else ''}",
                      flush=True)
                for line in result.get("recipe", []) if seed == seeds[0] else []:
                    print(f"        {line}")
    print(f"\n{args.model} width {args.width:g} depth {args.depth:g}, {args.epochs} epochs at {args.image_size} px, "
          f"seeds {args.seeds}")
    print("| dataset | arm | top-1 per seed | mean | wall s (mean) |")
    print("|---|---|---|---|---|")
    for name, by_arm in results.items():
        for arm, by_seed in by_arm.items():
            top1 = [by_seed[s]["top1"] for s in seeds]
            seconds = statistics.mean(by_seed[s]["seconds"] for s in seeds)
            print(f"| {name} | {ARM_NAMES[arm]} | {', '.join(f'{t:.4f}' for t in top1)} | "
                  f"{statistics.mean(top1):.4f} | {seconds:.0f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1, default=str)
    for name, by_arm in results.items():
        means = {arm: statistics.mean(by_arm[arm][s]["top1"] for s in seeds) for arm in by_arm}
        print(f"real data ({name}): " + ", ".join(f"{ARM_NAMES[a]} {m:.4f}" for a, m in means.items()))


if __name__ == "__main__":
    main()
