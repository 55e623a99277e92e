"""Training health: each check fires on the logs of a run that is not learning, once, with a one-line
warning that names the fix and a progress.jsonl record; healthy logs fire nothing."""
import math

import pytest

from effnet_tf import config as config_lib
from effnet_tf.config import apply_override_string
from effnet_tf.training import health
from effnet_tf.training.plan import make_plan


def _config(extra=""):
    config = config_lib.ExperimentConfig()
    apply_override_string(config, "train.epochs=15,train.image_size=64,eval.image_size=64" + ("," + extra if extra else ""))
    return make_plan(config, num_classes=10, train_examples=1497)


def _watch(plan, epochs_logs, regularization=0.0):
    warnings, records = [], []
    callback = health.TrainingHealth(plan.config, plan.epochs, warn=warnings.append, record=records.append,
                                     regularization_loss=lambda: regularization,
                                     steps_per_epoch=plan.steps_per_epoch)
    for epoch, logs in enumerate(epochs_logs):
        callback.on_epoch_end(epoch, dict(logs))
    return warnings, records


def test_loss_at_chance_fires_once_after_the_first_epochs_with_the_fix():
    plan = _config("train.randaug_magnitude=5,data.crop_area_min=0.25")
    logs = [{"loss": 4.0, "top1": 0.1}] * 6  # above ln 10 = 2.303 throughout
    warnings, records = _watch(plan, logs)
    assert len(warnings) == len(records) == 1
    # Not before 30% of the run (5 of 15 epochs) nor before the warmup ended.
    assert records[0]["check"] == "loss_at_chance" and records[0]["epoch"] == 5
    assert records[0]["uniform_loss"] == pytest.approx(math.log(10), abs=1e-6)
    line = warnings[0]
    assert "\n" not in line and "2.303 (ln 10" in line and "train.regularization=0" in line
    assert "RandAugment 5" in line and "crop area >= 0.25" in line and "train.base_learning_rate" in line


def test_the_weight_decay_term_is_not_counted_as_data_loss():
    plan = _config()
    warnings, _ = _watch(plan, [{"loss": 2.5, "top1": 0.5}] * 5, regularization=0.4)  # data loss 2.1 < 2.303
    assert warnings == []


def test_train_far_below_eval_and_eval_at_chance():
    plan = _config()
    logs = [{"loss": 2.0, "top1": 0.24, "val_top1": 0.43}]
    warnings, records = _watch(plan, [{"loss": 1.0, "top1": 0.5}] * 4 + logs)
    assert [r["check"] for r in records] == ["train_far_below_eval"]
    assert "training top-1 0.240 is far below eval top-1 0.430" in warnings[0]
    chance = [{"loss": 2.0, "top1": 0.30, "val_top1": 0.11}] * 4
    _, records = _watch(plan, chance)
    assert [r["check"] for r in records] == ["eval_at_chance"] and records[0]["epoch"] == 4  # a quarter of 15


# A healthy run (V2-B0, 15 epochs on the scikit-learn digits): its loss includes the weight-decay
# term (0.43 at initialization) and sits above ln 10 for the first two epochs.
HEALTHY_LOSS = [3.786, 3.132, 2.464, 1.979, 1.955, 1.71, 1.696, 1.567, 1.438, 1.405, 1.333, 1.271, 1.27, 1.282, 1.303]
HEALTHY_TOP1 = [0.207, 0.413, 0.584, 0.712, 0.771, 0.84, 0.857, 0.875, 0.919, 0.901, 0.927, 0.932, 0.938, 0.931, 0.932]


# A healthy run with an eval every epoch (the real-data benchmark's digits, seed 1, 0.99 at the
# end): the epoch-mean training top-1 lags the eval while the model learns fast.
DIGITS_TOP1 = [0.219, 0.564, 0.709, 0.768, 0.805, 0.821, 0.839, 0.85, 0.865, 0.868, 0.88, 0.888, 0.9, 0.914, 0.918]
DIGITS_EVAL = [0.43, 0.9, 0.96, 0.99, 0.987, 0.99, 0.993, 0.997, 0.99, 0.98, 0.99, 0.99, 0.99, 0.99, 0.99]
DIGITS_LOSS = [4.148, 2.601, 2.139, 1.936, 1.873, 1.805, 1.606, 1.51, 1.463, 1.423, 1.334, 1.273, 1.237, 1.193, 1.178]


def test_healthy_logs_fire_nothing():
    logs = [{"loss": loss, "top1": top1, "val_top1": val}
            for loss, top1, val in zip(DIGITS_LOSS, DIGITS_TOP1, DIGITS_EVAL)]
    assert _watch(_config(), logs, regularization=0.43) == ([], [])
def test_healthy_logs_without_a_lagging_top1_fire_nothing():
    plan = _config()
    logs = [{"loss": loss, "top1": top1, "val_top1": min(top1 + 0.05, 0.99)}
            for loss, top1 in zip(HEALTHY_LOSS, HEALTHY_TOP1)]
    assert _watch(plan, logs, regularization=0.43) == ([], [])


def test_eval_at_another_size_is_judged_only_at_the_last_epoch():
    # The demo (progressive 40 -> 64 px, eval at 64): after epoch 4 it trained at 48 px and its eval
    # at 64 px read 0.33 (chance 0.25 for 4 classes) with training top-1 0.65; it ended at 0.75.
    config = config_lib.ExperimentConfig()
    apply_override_string(config, "train.epochs=8,train.image_size=64,eval.image_size=64")
    plan = make_plan(config, num_classes=4, train_examples=4096)
    logs = [{"loss": 2.239, "top1": 0.298}, {"loss": 1.662, "top1": 0.353, "val_top1": 0.242},
            {"loss": 1.318, "top1": 0.457}, {"loss": 0.993, "top1": 0.652, "val_top1": 0.33}]
    sizes = [40, 40, 48, 48]
    warnings, records = [], []
    callback = health.TrainingHealth(plan.config, plan.epochs, warn=warnings.append, record=records.append,
                                     steps_per_epoch=plan.steps_per_epoch)
    for epoch, (size, entry) in enumerate(zip(sizes, logs)):
        callback.train_image_size = size
        callback.on_epoch_end(epoch, dict(entry))
    assert warnings == [] and records == []
    # At the eval size the same numbers are judged, and at the last epoch whatever the size.
    callback.train_image_size = 64
    callback.on_epoch_end(4, {"loss": 0.99, "top1": 0.65, "val_top1": 0.3})
    assert [r["check"] for r in records] == ["eval_at_chance"]
    last = health.TrainingHealth(plan.config, plan.epochs, warn=warnings.append, record=records.append,
                                 steps_per_epoch=plan.steps_per_epoch)
    last.train_image_size = 48
    last.on_epoch_end(7, {"loss": 0.99, "top1": 0.65, "val_top1": 0.3})
    assert last.fired == ["eval_at_chance"]


def test_a_run_of_a_few_steps_is_not_judged():
    config = config_lib.ExperimentConfig()
    apply_override_string(config, "train.epochs=4,train.image_size=64,train.global_batch_size=16")
    plan = make_plan(config, num_classes=10, train_examples=64)  # 4 steps per epoch
    assert _watch(plan, [{"loss": 9.0, "top1": 0.0, "val_top1": 0.0}] * 4) == ([], [])


def test_warmup_that_never_ends_is_a_plan_warning():
    plan = _config("train.warmup_epochs=20")
    (warning,) = health.plan_warnings(plan)
    assert warning["check"] == "warmup_never_ends" and "train.warmup_epochs=20" in warning["message"]
    assert health.plan_warnings(_config()) == []


def test_chance_threshold():
    assert health.chance_top1(10) == pytest.approx(0.15) and health.chance_top1(2) == pytest.approx(0.6)
    assert health.chance_top1(1000) == pytest.approx(0.0015)
