"""The plan: one resolution and validation, frozen afterwards, sizes snapped once; the run directory."""
import json
import os

import pytest

from effnet_tf import config as config_lib
from effnet_tf.config import apply_override_string
from effnet_tf.storage.run_directory import RunDirectory
from effnet_tf.training.plan import make_plan


def _v2s(extra=""):
    config = config_lib.ExperimentConfig()
    apply_override_string(config, "model.name=efficientnetv2-s,progressive.mode=staged,train.epochs=8,"
                                  "train.global_batch_size=64" + ("," + extra if extra else ""))
    return config


def test_plan_holds_the_resolved_sizes_and_steps():
    plan = make_plan(_v2s(), num_classes=10, train_examples=6_400)
    # V2-S: train 300, eval 384 (the official effnetv2_configs.py); 32-px buckets from 128 plus the final 300.
    assert plan.buckets == (128, 160, 192, 224, 256, 288, 300)
    assert [s.image_size for s in plan.stages] == [128, 192, 256, 300]  # 128 + 172 i/3, snapped
    assert all(s.image_size in plan.buckets for s in plan.stages)
    assert plan.eval_size == plan.config.eval.image_size == 384
    assert plan.steps_per_epoch == 100 and plan.total_steps == 800
    assert plan.sizes == [128, 192, 256, 300]
    assert plan.stage_at_epoch(5).index == 2 and plan.jit_compile is False
    assert plan.should_evaluate(0) and plan.run_dir is None


def test_plan_is_frozen_and_leaves_the_users_config_alone():
    config = _v2s()
    plan = make_plan(config, num_classes=10, train_examples=6_400)
    assert config.train.image_size is None and not config_lib.is_frozen(config)
    with pytest.raises(config_lib.FrozenConfigError, match="TrainConfig.image_size"):
        plan.config.train.image_size = 224
    with pytest.raises(AttributeError):
        plan.eval_size = 1  # the plan itself is a frozen dataclass
    copy = config_lib.copy_config(plan.config)
    copy.train.image_size = 224  # a copy is mutable again
    assert copy.train.image_size == 224 and plan.config.train.image_size == 300


def test_plan_validates_once_and_names_every_bad_key():
    config = _v2s("train.global_batch_size=30,model.dropout_rate=1.5,eval.every_epochs=0,"
                  "export.calibration_examples=0")
    with pytest.raises(ValueError) as error:
        make_plan(config, num_classes=10, train_examples=6_400, num_replicas=4)
    message = str(error.value)
    assert "global_batch_size=30 must be divisible by the 4 replicas" in message
    assert "model.dropout_rate=1.5" in message
    assert "eval.every_epochs=0 must be null or >= 1" in message
    assert "export.calibration_examples=0 must be >= 1" in message
    with pytest.raises(ValueError, match="train.global_batch_size=0 must be > 0"):
        make_plan(_v2s("train.global_batch_size=0"), num_classes=10, train_examples=6_400)


def test_run_directory_paths_and_the_one_writer(tmp_path):
    run = RunDirectory(str(tmp_path / "run"))
    assert run.config_file == os.path.join(str(tmp_path), "run", "config.yaml")
    assert run.checkpoint_directory() == run.checkpoints.rstrip("/")
    assert RunDirectory("gs://bucket/runs/a/").export == "gs://bucket/runs/a/export"
    assert not run.is_run()
    run.create()
    run.write_config("train:\n  epochs: 1\n")
    run.record({"event": "run_start"})
    assert run.is_run() and [r["event"] for r in run.read_progress()] == ["run_start"]
    # A partial last line (a killed writer) is skipped and the next record starts a new line.
    with open(run.progress_file, "a") as handle:
        handle.write('{"event": "ep')
    run.record({"event": "run_end"})
    assert [r["event"] for r in run.read_progress()] == ["run_start", "run_end"]
    other = RunDirectory(str(tmp_path / "other"), writer=False, worker_id=1)
    other.create()
    assert other.write_config("x: 1\n") is None
    other.record({"event": "run_start"})
    assert not os.path.exists(other.root)  # a non-writer process writes nothing shared
    assert other.checkpoint_directory().endswith("checkpoints_tmp_worker1")
    assert json.loads(json.dumps(run.read_progress()))[0]["time"] > 0
