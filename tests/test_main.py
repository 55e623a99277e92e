"""The absl driver: flag/config precedence, CLI errors, SIGKILL-and-resume in a subprocess,
a finished run restarted, and the README's main job (the demo) learning."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_BLOCKS = ["r1_k3_s1_e1_i16_o8_c1", "r1_k3_s2_e2_i8_o16_c1", "r1_k3_s2_e2_i16_o16_se0.25"]


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _driver(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "effnet_tf.main", *args], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _progress(model_dir):
    records = []
    with open(os.path.join(model_dir, "progress.jsonl")) as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut by SIGKILL
                pass
    return records


@pytest.fixture
def flag_values():
    from effnet_tf import main

    main.FLAGS.unparse_flags()
    yield main.FLAGS
    main.FLAGS.unparse_flags()


def test_flags_override_params_override_override_yaml(tmp_path, flag_values):
    from effnet_tf import main

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("train:\n  epochs: 5\n  global_batch_size: 8\nruntime:\n  model_dir: from_yaml\n  precision: mixed_bfloat16\n")
    second.write_text("train:\n  epochs: 6\n")
    flag_values([
        "effnet-train", f"--config={first}", f"--config={second}", "--params_override=train.epochs=7,data.num_classes=3",
        "--model_dir=/tmp/from_flag", "--blocks=" + ",".join(TINY_BLOCKS), "--width=0.5", "--precision=float32",
        "--strategy=default", "--steps_per_loop=2", "--mode=train", "--data_dir=gs://b/d",
    ])
    config = main.build_config(flag_values)
    assert config.train.epochs == 7 and config.train.global_batch_size == 8 and config.data.num_classes == 3
    assert config.runtime.model_dir == "/tmp/from_flag" and config.runtime.precision == "float32"
    assert config.model.name is None and config.model.blocks == TINY_BLOCKS and config.model.width == 0.5
    assert (config.runtime.strategy, config.runtime.steps_per_loop, config.runtime.mode) == ("default", 2, "train")
    assert config.data.data_dir == "gs://b/d"
    flag_values.unparse_flags()
    flag_values(["effnet-train", f"--config={first},{second}", "--model=efficientnetv2-s"])
    config = main.build_config(flag_values)
    assert config.train.epochs == 6 and config.model.name == "efficientnetv2-s"


def test_model_dir_config_is_used_when_no_config_is_given(tmp_path, flag_values):
    from effnet_tf import main

    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "config.yaml").write_text("model:\n  name: efficientnetv2-b1\ntrain:\n  epochs: 9\n")
    flag_values(["effnet-train", "--mode=export", f"--model_dir={model_dir}", "--export_dir=/tmp/x", "--overwrite"])
    config = main.build_config(flag_values)
    assert config.model.name == "efficientnetv2-b1" and config.train.epochs == 9
    assert (config.export.dir, config.export.overwrite, config.runtime.mode) == ("/tmp/x", True, "export")


@pytest.mark.slow
def test_cli_reports_unknown_key_in_one_line():
    process = _driver("--params_override=train.epoch=3", "--model_dir=/tmp/unused")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    line = [l for l in output.splitlines() if l.startswith("effnet-train: error:")]
    assert line and "'train.epoch'" in line[0] and "train.epochs" in line[0] and "Traceback" not in output


def _tiny_yaml(path, model_dir, epochs):
    """A ~10k-parameter model on 32/48 px synthetic shapes, 8 steps of 16 images per epoch."""
    config = {
        "model": {"name": None, "blocks": TINY_BLOCKS},
        "data": {"name": "synthetic", "num_classes": 4, "train_examples": 128, "eval_examples": 32},
        "train": {"epochs": epochs, "global_batch_size": 16, "image_size": 48, "warmup_epochs": 0,
                  "randaug_magnitude": 0},
        "progressive": {"mode": "staged", "num_stages": 3, "min_image_size": 32, "bucket_step": 16},
        "eval": {"image_size": 48, "frequency": "end"},
        "export": {"enabled": False},
        "runtime": {"model_dir": str(model_dir), "checkpoint_every_steps": 3, "verbose": 2, "mode": "train"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _latest_step(model_dir):
    index = os.path.join(model_dir, "checkpoints", "checkpoint")
    try:
        with open(index) as handle:
            match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', handle.read(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_in_the_right_stage(tmp_path):
    model_dir = tmp_path / "run"
    epochs, steps_per_epoch = 6, 8  # 3 stages of 2 epochs at 32, 40 -> 48 (buckets of 16: 32, 48, 48)
    config = _tiny_yaml(tmp_path / "tiny.yaml", model_dir, epochs)
    process = _driver(f"--config={config}")
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and process.poll() is None:
        step = _latest_step(model_dir)
        # Kill once a mid-epoch checkpoint past the first stage exists (a preemption).
        if step is not None and step > 2 * steps_per_epoch and step % steps_per_epoch:
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed_at = step
            break
        time.sleep(0.02)
    assert killed_at is not None, "the run finished or stalled before it could be killed"
    first = _progress(model_dir)
    assert not any(r["event"] == "run_end" for r in first)

    rerun = _driver(f"--config={config}")
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output
    records = _progress(model_dir)[len(first):]
    start = records[0]
    resumed_step = start["global_step"]
    assert start["event"] == "run_start" and resumed_step >= killed_at and start["resumed_from"].endswith(f"ckpt-{resumed_step}")
    epoch, in_epoch = divmod(resumed_step, steps_per_epoch)
    assert (start["epoch"], start["step_in_epoch"]) == (epoch, in_epoch) and in_epoch > 0
    assert f"Resuming from" in output and f"epoch {epoch + 1} (step {in_epoch} of it)" in output
    # The schedule continues where it stopped: the stage of the restored epoch, then the rest.
    stages = [r for r in records if r["event"] == "stage"]
    assert stages[0]["index"] == epoch // 2 and stages[0]["resumed_at_epoch"] == epoch
    epoch_records = [r for r in records if r["event"] == "epoch"]
    assert [r["epoch"] for r in epoch_records] == list(range(epoch + 1, epochs + 1))
    assert epoch_records[0]["steps"] == steps_per_epoch - in_epoch  # the interrupted epoch is finished
    assert all(r["steps"] == steps_per_epoch for r in epoch_records[1:])
    sizes = {0: 32, 1: 48, 2: 48}
    assert all(r["image_size"] == sizes[(r["epoch"] - 1) // 2] for r in epoch_records)
    end = records[-1]
    assert end["event"] == "run_end" and end["epochs"] == epochs and end["global_step"] == epochs * steps_per_epoch

    # Started again when finished: nothing trains, nothing breaks.
    checkpoints = sorted(os.listdir(model_dir / "checkpoints"))
    again = _driver(f"--config={config}")
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    assert "Training already complete" in output
    assert sorted(os.listdir(model_dir / "checkpoints")) == checkpoints
    last = _progress(model_dir)[-1]
    assert last["event"] == "run_end" and last["already_complete"] is True and last["epochs"] == epochs


# The driver's own entry point, in a process whose CPU is split into two logical devices first
# (a process can only do that before TensorFlow initialises).
_TWO_CPU_DRIVER = (
    "import sys, tensorflow as tf; cpu = tf.config.list_physical_devices('CPU')[0]; "
    "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2); "
    "from effnet_tf.main import run; sys.argv[0] = 'effnet-train'; run()"
)


def _event_tags(directory):
    import tensorflow as tf

    tags = set()
    for path in directory.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


@pytest.mark.slow
def test_driver_under_mirrored_strategy_on_two_cpus(tmp_path):
    model_dir = tmp_path / "run"
    config = _tiny_yaml(tmp_path / "tiny.yaml", model_dir, epochs=2)
    process = subprocess.run(
        [sys.executable, "-c", _TWO_CPU_DRIVER, f"--config={config}", "--strategy=mirrored", "--steps_per_loop=2",
         "--params_override=model.sync_batch_norm=true,progressive.num_stages=2,runtime.checkpoint_every_steps=2,"
         "export.enabled=true,runtime.mode=train_and_eval,eval.frequency=stage,data.train_examples=64"],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    output = process.stdout
    assert process.returncode == 0, output
    assert "2 replica(s) (MirroredStrategy)" in output
    records = _progress(model_dir)
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["steps"] for r in epochs] == [4, 4] and [r["image_size"] for r in epochs] == [32, 48]
    assert [r["train_functions"] for r in epochs] == [1, 2]  # one program per size, with 2 replicas
    assert all("val_top1" in r for r in epochs)  # evaluated after each stage
    end = records[-1]
    assert end["event"] == "run_end" and end["global_step"] == 8 and 0.0 <= end["eval_top1"] <= 1.0
    assert os.path.exists(os.path.join(end["saved_model"], "saved_model", "saved_model.pb"))
    from effnet_tf.training.loop import tensorboard_available

    if not tensorboard_available():
        pytest.skip("tensorboard is not installed: the TensorBoard part of this test cannot run")
    tags = _event_tags(model_dir / "logs" / "train") | _event_tags(model_dir / "logs" / "progressive")
    for tag in ("epoch_loss", "epoch_top1", "epoch_top5", "epoch_learning_rate", "progressive/image_size",
                "progressive/randaug_magnitude", "progressive/mixup_alpha", "progressive/dropout_rate",
                "perf/images_per_second", "compile/train_functions"):
        assert tag in tags, (tag, tags)
    assert _event_tags(model_dir / "logs" / "validation") >= {"epoch_top1", "epoch_loss"}


@pytest.mark.slow
def test_demo_learns(tmp_path):
    """A short version of ``configs/demo.yaml``: same model, data and recipe, half the epochs
    (4 x 128 steps instead of 8 x 128) in 2 progressive stages instead of 4 (fewer compiles).

    Threshold: 4 balanced classes, so chance is 25%. On 256 validation images the accuracy of a
    model that guesses has a standard deviation of sqrt(0.25 * 0.75 / 256) = 2.7%, so 40% is
    5.5 standard deviations above chance: it cannot pass by luck. The short run measured ~54%
    at this point on this CPU (the full demo ~60-70%), which leaves a margin for seed noise.
    """
    from effnet_tf import config as config_lib
    from effnet_tf.config import apply_override_string
    from effnet_tf.run.driver import Driver

    config = config_lib.load_yaml_files([os.path.join(REPO, "configs", "demo.yaml")])
    assert config.data.num_classes == 4 and config.progressive.mode == "staged"
    apply_override_string(config, f"runtime.model_dir={tmp_path},runtime.verbose=0,eval.frequency=end,"
                                  "train.epochs=4,progressive.num_stages=2,data.eval_examples=256,export.enabled=false,"
                                  "runtime.tensorboard=false")
    driver = Driver(config)
    assert [s.image_size for s in driver.plan.stages] == [40, 64]
    results = driver.train(evaluate=True)
    print("short demo:", results["eval"])
    assert results["eval"]["top1"] > 0.40, results
