"""The progressive schedule (sizes, regularization, random sampling, determinism, buckets) and the
learning-rate schedules, against hand-computed values."""
import math

import pytest

from effnet_tf import config as config_lib
from effnet_tf.config import apply_override_string
from effnet_tf.training import schedule as S
from effnet_tf.training.lr_schedules import build_lr_schedule


def _spec(mode="staged", epochs=12, buckets=None, min_size=128, max_size=300, **kwargs):
    low = S.Regularization(randaug_magnitude=5, mixup_alpha=0, cutmix_alpha=0, dropout_rate=0.1, drop_connect_rate=0.2)
    high = S.Regularization(randaug_magnitude=15, mixup_alpha=0.3, cutmix_alpha=0, dropout_rate=0.3, drop_connect_rate=0.2)
    buckets = buckets or tuple(range(128, 301, 4))
    return S.ScheduleSpec(mode=mode, epochs=epochs, buckets=buckets, min_size=min_size, max_size=max_size,
                          min_reg=low, max_reg=high, **kwargs)


def test_staged_paper_sizes_and_linear_regularization():
    stages = S.build_schedule(_spec(num_stages=4))
    # Algorithm 1: S_i = 128 + 172 * i / 3 = 128, 185.3, 242.7, 300 -> 4-px buckets.
    assert [s.image_size for s in stages] == [128, 184, 244, 300]
    assert [s.randaug_magnitude for s in stages] == pytest.approx([5, 5 + 10 / 3, 5 + 20 / 3, 15])
    assert [s.mixup_alpha for s in stages] == pytest.approx([0, 0.1, 0.2, 0.3])
    assert [s.dropout_rate for s in stages] == pytest.approx([0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3])
    assert [s.drop_connect_rate for s in stages] == pytest.approx([0.2] * 4)
    assert [(s.start_epoch, s.end_epoch) for s in stages] == [(0, 3), (3, 6), (6, 9), (9, 12)]


def test_staged_official_sizing():
    # Official code: 128 + (300 - 128)(i + 1)/4 = 171, 214, 257, 300 (efficientnet_v2's train loop).
    stages = S.build_schedule(_spec(num_stages=4, sizing="official", buckets=tuple(range(128, 301))))
    assert [s.image_size for s in stages] == [171, 214, 257, 300]
    # Regularization still starts at the minimum.
    assert stages[0].randaug_magnitude == 5 and stages[-1].randaug_magnitude == 15


def test_staged_uneven_epochs_cover_every_epoch_once():
    stages = S.build_schedule(_spec(num_stages=3, epochs=10))
    covered = [e for s in stages for e in range(s.start_epoch, s.end_epoch)]
    assert covered == list(range(10)) and [s.epochs for s in stages] == [3, 3, 4]


def test_sizes_snap_to_buckets_like_the_pipeline():
    from effnet_tf import data

    buckets = data.make_buckets(128, 300, 32)  # 128..288: 300 is not on the grid
    stages = S.build_schedule(_spec(num_stages=4, buckets=buckets))
    assert [s.image_size for s in stages] == [data.snap_to_bucket(v, buckets) for v in (128, 128 + 172 / 3, 128 + 344 / 3, 300)]
    assert all(s.image_size in buckets for s in stages)
    for size in (100, 143.9, 144, 144.1, 1000):
        assert S.snap_to_bucket(size, buckets) == data.snap_to_bucket(size, buckets)


def test_none_mode_is_one_stage_at_the_maximum():
    spec = _spec(mode="none", epochs=5, buckets=(300,), min_size=300)
    (stage,) = S.build_schedule(spec)
    assert (stage.image_size, stage.start_epoch, stage.end_epoch) == (300, 0, 5)
    assert stage.randaug_magnitude == 15 and stage.dropout_rate == 0.3


def test_random_mode_samples_every_interval_and_regularization_follows_size():
    buckets = (128, 160, 192, 224, 256, 288)
    spec = _spec(mode="random", epochs=50, buckets=buckets, max_size=288, interval=8)
    stages = S.build_schedule(spec, seed=3)
    assert [(s.start_epoch, s.end_epoch) for s in stages] == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40),
                                                             (40, 48), (48, 50)]
    for s in stages:
        assert s.image_size in buckets
        fraction = (s.image_size - 128) / (288 - 128)
        assert s.randaug_magnitude == pytest.approx(5 + 10 * fraction)
        assert s.mixup_alpha == pytest.approx(0.3 * fraction)
        assert s.dropout_rate == pytest.approx(0.1 + 0.2 * fraction)
    # Deterministic in the seed, different across seeds, and it does use several sizes.
    assert S.build_schedule(spec, seed=3) == stages
    many = [tuple(s.image_size for s in S.build_schedule(spec, seed=k)) for k in range(10)]
    assert len(set(many)) > 1 and len({size for sizes in many for size in sizes}) >= 4
    # A custom interval.
    assert [s.epochs for s in S.build_schedule(_spec(mode="random", epochs=9, interval=4), seed=0)] == [4, 4, 1]


def test_stage_at_epoch_is_a_pure_function_of_the_epoch():
    spec = _spec(mode="random", epochs=40, buckets=(128, 192, 256))
    stages = S.build_schedule(spec, seed=11)
    for epoch in range(40):
        stage = S.stage_at_epoch(spec, 11, epoch)
        assert stage.start_epoch <= epoch < stage.end_epoch and stage in stages
    assert S.stage_at_epoch(spec, 11, 100) == stages[-1]
    with pytest.raises(ValueError):
        S.stage_at_epoch(spec, 11, -1)


def test_spec_errors():
    with pytest.raises(ValueError, match="mode"):
        _spec(mode="sometimes")
    with pytest.raises(ValueError, match="num_stages"):
        _spec(num_stages=20, epochs=4)
    with pytest.raises(ValueError, match="buckets"):
        _spec(buckets=(256, 128))


def test_spec_from_resolved_config():
    config = config_lib.ExperimentConfig()
    apply_override_string(config, "model.name=efficientnetv2-m,progressive.mode=staged,train.epochs=8,"
                                  "train.regularization=1.0")  # the full recipe (8 epochs alone: none)
    resolved = config_lib.resolve(config, num_classes=10, train_examples=100_000)
    spec = S.spec_from_config(resolved, tuple(range(128, 385, 32)))
    stages = S.build_schedule(spec)
    # V2-M: 128 -> 384 px, RandAugment 5 -> 15, mixup 0 -> 0.2, dropout 0.1 -> 0.3 (the variant's).
    assert [s.image_size for s in stages] == [128, 224, 288, 384]
    assert (stages[0].randaug_magnitude, stages[-1].randaug_magnitude) == (5, 15)
    assert (stages[0].mixup_alpha, stages[-1].mixup_alpha) == (0, 0.2)
    assert (stages[0].dropout_rate, stages[-1].dropout_rate) == pytest.approx((0.1, 0.3))
    line = S.describe(stages[1], len(stages), compiled=1)
    for needle in ("Stage 2/4", "epochs 3-4", "image size 224", "RandAugment magnitude 8.3", "mixup 0.07",
                   "dropout 0.167", "compiled train functions so far: 1"):
        assert needle in line


# The official ImageNet recipe's LR settings (the schema's defaults are "auto": effnet_tf.config.budget).
OFFICIAL_LR = dict(optimizer="rmsprop", base_learning_rate=0.016, lr_schedule="exponential", warmup_epochs=5)


def _train(**overrides):
    config = config_lib.ExperimentConfig()
    values = dict(OFFICIAL_LR, **overrides)
    apply_override_string(config, ",".join(f"train.{k}={v}" for k, v in values.items()))
    return config.train


def test_exponential_lr_matches_the_official_formula():
    t = _train(global_batch_size=4096, epochs=350)
    spe = 312
    schedule = build_lr_schedule(t, spe)
    peak = 0.016 * 4096 / 256
    for step in (0, 100, 5 * spe - 1, 5 * spe, 10_000, 100_000):
        if step < 5 * spe:
            expected = peak * step / (5 * spe)
        else:
            expected = peak * 0.97 ** math.floor(step / round(2.4 * spe))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5)


def test_cosine_and_constant_lr():
    t = _train(global_batch_size=256, epochs=10, lr_schedule="cosine", warmup_epochs=1, lr_min_ratio=0.1)
    schedule = build_lr_schedule(t, 100)
    assert float(schedule(50)) == pytest.approx(0.016 * 0.5, rel=1e-5)
    for step in (100, 550, 1000):
        progress = (step - 100) / 900
        expected = 0.016 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-4)
    t = _train(global_batch_size=512, base_learning_rate=0.00025, epochs=15, lr_schedule="constant", warmup_epochs=1)
    schedule = build_lr_schedule(t, 10)
    assert [float(schedule(s)) for s in (0, 5, 10, 149)] == pytest.approx([0, 2.5e-4, 5e-4, 5e-4])
