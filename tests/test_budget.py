"""The recipe scaled to the run (effnet_tf.config.budget) and how resolve applies it: a short run on
a small folder gets a plain recipe, 350 epochs get the variant's ImageNet values, and the shipped
ImageNet configs resolve to the official recipe whatever the defaults are."""
import glob
import math
import os

import pytest

from effnet_tf import config as config_lib
from effnet_tf.config import apply_override_string, budget

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _resolve(overrides="", num_classes=10, train_examples=1497, num_replicas=1, on_tpu=False, notes=None):
    config = config_lib.ExperimentConfig()
    apply_override_string(config, overrides)
    resolved = config_lib.resolve(config, num_classes=num_classes, train_examples=train_examples,
                                  num_replicas=num_replicas, on_tpu=on_tpu, notes=notes)
    config_lib.validate(resolved, num_replicas=num_replicas)
    return resolved


def test_strength_is_zero_for_short_runs_one_at_the_official_budget_and_log_linear_between():
    assert budget.regularization_strength(1) == budget.regularization_strength(10) == 0.0
    assert budget.regularization_strength(350) == budget.regularization_strength(1000) == 1.0
    # Log scale: the geometric mean of 10 and 350 epochs is half way.
    assert budget.regularization_strength(math.sqrt(10 * 350)) == pytest.approx(0.5)
    values = [budget.regularization_strength(e) for e in (11, 15, 30, 90, 200, 349)]
    assert values == sorted(values) and 0 < values[0] and values[-1] < 1


def test_crop_area_and_eval_crop_follow_the_strength():
    assert budget.scaled_crop_area(0.05, 0.0) == 1.0 and budget.scaled_crop_area(0.05, 1.0) == 0.05
    assert budget.scaled_crop_area(0.08, 0.5) == pytest.approx(math.sqrt(0.08))
    # The official eval crop with the variant's crops, the whole image without crops.
    assert budget.eval_crop_fraction(0.05, 0.05, 224) == pytest.approx(224 / 256)
    assert budget.eval_crop_fraction(0.05, 0.05, 384) == 1.0
    assert budget.eval_crop_fraction(1.0, 0.05, 224) == 1.0
    half = budget.eval_crop_fraction(math.sqrt(0.05), 0.05, 224)
    assert half == pytest.approx(math.sqrt(224 / 256))


def test_auto_batch_fits_the_data_the_replicas_and_the_image_size():
    assert budget.auto_batch_size(1497, 1, 64, on_tpu=False) == 32  # ~50 steps per epoch
    assert budget.auto_batch_size(4096, 1, 64, on_tpu=False) == 64
    assert budget.auto_batch_size(100, 1, 64, on_tpu=False) == budget.MIN_BATCH
    # Capped per replica, by the image size: 64 at 224 px on CPU/GPU, 128 on TPU.
    assert budget.auto_batch_size(1_281_167, 1, 224, on_tpu=False) == 64
    assert budget.auto_batch_size(1_281_167, 8, 224, on_tpu=True) == 1024
    assert budget.auto_batch_size(1_281_167, 2, 448, on_tpu=False) == 32
    assert budget.auto_batch_size(1_281_167, 3, 224, on_tpu=False) % 3 == 0


def test_adam_lr_ema_and_warmup_scale_with_batch_and_budget():
    assert budget.auto_peak_learning_rate(32) == pytest.approx(3e-3)
    assert budget.auto_peak_learning_rate(128) == pytest.approx(6e-3)
    # EMA over the last 10% of the steps; the official 0.9999 at ImageNet's 350 x 312 steps.
    assert budget.auto_ema_decay(690) == pytest.approx(1 - 1 / 69, abs=1e-6)
    assert budget.auto_ema_decay(350 * 312) == 0.9999 and budget.auto_ema_decay(10) == 0.9
    assert budget.auto_warmup_epochs(15) == 0.75 and budget.auto_warmup_epochs(350) == 5.0


def test_a_short_run_on_a_small_folder_resolves_to_a_plain_recipe_and_says_why():
    notes = []
    r = _resolve("train.epochs=15,train.image_size=64,eval.image_size=64", notes=notes)
    t, d, m = r.train, r.data, r.model
    assert (t.global_batch_size, t.steps_per_epoch, t.optimizer, t.lr_schedule) == (32, 46, "adam", "cosine")
    assert t.base_learning_rate * t.global_batch_size / 256 == pytest.approx(3e-3)
    assert t.warmup_epochs == 0.75 and t.ema_decay == pytest.approx(1 - 1 / 69, abs=1e-6)
    s = budget.regularization_strength(15)
    assert t.regularization == pytest.approx(s, abs=1e-4)
    assert t.randaug_magnitude == pytest.approx(10 * s, abs=1e-3) and t.mixup_alpha == 0
    assert m.dropout_rate == pytest.approx(0.2 * s, abs=1e-3) and m.drop_connect_rate == pytest.approx(0.2 * s, abs=1e-3)
    assert d.crop_area_min == pytest.approx(0.05 ** s, abs=1e-3) and d.flip_probability == pytest.approx(0.5 * s, abs=1e-3)
    assert d.randaug_policy == "increasing" and 0.95 < d.eval_crop_fraction < 1
    assert len(notes) == 2 and notes[0].startswith("Recipe (auto): batch 32") and "Adam" in notes[0]
    assert "from 15 epochs" in notes[1] and "RandAugment 1.14" in notes[1]


def test_strength_zero_is_plain_training_and_one_is_the_variants_recipe():
    r = _resolve("train.epochs=5,train.image_size=64")
    assert (r.train.randaug_magnitude, r.data.crop_area_min, r.data.flip_probability, r.data.eval_crop_fraction,
            r.model.dropout_rate, r.model.drop_connect_rate) == (0, 1.0, 0, 1.0, 0, 0)
    full = _resolve("train.epochs=5,train.regularization=1.0,model.name=efficientnetv2-s", train_examples=50_000)
    assert (full.train.randaug_magnitude, full.progressive.min_randaug_magnitude, full.data.crop_area_min,
            full.model.dropout_rate, full.progressive.min_dropout_rate, full.data.flip_probability) == (
        10, 5, 0.05, 0.2, 0.1, 0.5)


def test_explicit_values_are_kept_and_not_reported():
    notes = []
    r = _resolve("train.epochs=15,train.global_batch_size=64,train.optimizer=rmsprop,train.randaug_magnitude=7,"
                 "data.crop_area_min=0.5,train.ema_decay=0.99,train.warmup_epochs=2,train.lr_schedule=constant",
                 notes=notes)
    assert (r.train.global_batch_size, r.train.optimizer, r.train.randaug_magnitude, r.data.crop_area_min,
            r.train.ema_decay, r.train.warmup_epochs, r.train.lr_schedule) == (64, "rmsprop", 7, 0.5, 0.99, 2, "constant")
    assert r.train.base_learning_rate == budget.BASE_LEARNING_RATES["rmsprop"]
    assert not any("batch" in line for line in notes) and "RandAugment" not in " ".join(notes)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "imagenet_*.yaml"))),
                         ids=lambda p: os.path.basename(p))
def test_imagenet_configs_resolve_to_the_official_recipe(path):
    config = config_lib.load_yaml_files([path])
    notes = []
    r = config_lib.resolve(config, on_tpu=True, num_classes=1000, train_examples=1_281_167, num_replicas=8,
                           notes=notes)
    t, d = r.train, r.data
    from effnet_tf.model.variants import get_variant

    v = get_variant(r.model.name)
    assert (t.optimizer, t.lr_schedule, t.warmup_epochs, t.base_learning_rate, t.ema_decay) == (
        "rmsprop", "exponential", 5, 0.016, 0.9999)
    assert (t.rmsprop_rho, t.momentum, t.epsilon, t.rmsprop_initial_rms) == (0.9, 0.9, 1e-3, 1.0)
    assert t.global_batch_size in (2048, 4096) and t.regularization == 1.0
    assert (t.randaug_magnitude, r.model.dropout_rate, r.model.drop_connect_rate) == (
        v.randaug_magnitude, v.dropout_rate, 0.2)
    assert (d.crop_area_min, d.flip_probability, d.randaug_policy) == (v.crop_area_min, 0.5, "official")
    eval_size = r.eval.image_size
    assert d.eval_crop_fraction == pytest.approx(eval_size / (eval_size + 32) if eval_size < 320 else 1.0, abs=1e-4)
    # Nothing was left to the budget rule: no recipe lines but the regularization's own.
    assert not any(line.startswith("Recipe (auto)") for line in notes)
