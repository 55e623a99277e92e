"""EMA of the BatchNorm moving statistics (train.ema_batchnorm): the recurrence by hand, under one
device and MirroredStrategy, saved and restored with the optimizer, swapped in for eval/export."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import effnet_tf
from effnet_tf.training.checkpoint import Progress, make_checkpoint
from effnet_tf.training.ema import ema_weights
from effnet_tf.training.optimizer import EMASGD
from effnet_tf.training.weight_decay import batchnorm_statistics

BLOCKS = ["r1_k3_s1_e1_i8_o8_c1", "r1_k3_s2_e2_i8_o16_se0.25"]
DECAY = 0.9


def _compiled_model(track=True):
    keras.utils.set_random_seed(0)
    model = effnet_tf.build_model(blocks=BLOCKS, num_classes=3, drop_connect_rate=0.0, dropout_rate=0.0,
                                  classifier_activation=None)
    optimizer = EMASGD(learning_rate=0.05, use_ema=True, ema_momentum=DECAY, ema_warmup=True)
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    optimizer.build(model.trainable_variables)
    if track:
        assert optimizer.track_moving_statistics(batchnorm_statistics(model)) == 2 * 6  # 6 BN layers
    return model, optimizer


def _batches(steps=4, batch=8):
    rng = np.random.default_rng(0)
    # Different brightness per step: the batch moments, so the moving statistics, move every step.
    for step in range(steps):
        yield (rng.uniform(0, 200, (batch, 16, 16, 3)) + 12 * step).astype("float32"), np.eye(3)[rng.integers(0, 3, batch)]


def _train_and_expect(model, optimizer, steps=4):
    """Trains ``steps`` steps and returns (averages the optimizer kept, the recurrence by hand):
    avg_0 = s_0, then avg_i = d_i avg_{i-1} + (1 - d_i) s_i with d_i = min(decay, (1+i)/(10+i))."""
    statistics = batchnorm_statistics(model)
    expected = None
    for step, (images, labels) in enumerate(_batches(steps)):
        # fit on a dataset: under MirroredStrategy each replica gets its half of the batch
        # (train_on_batch would give every replica the whole batch).
        model.fit(tf.data.Dataset.from_tensors((images, labels)), epochs=1, verbose=0, shuffle=False)
        values = [s.numpy().astype(np.float64) for s in statistics]  # the mean over replicas, if several
        decay = min(DECAY, (1 + step) / (10 + step))
        expected = values if step == 0 else [decay * e + (1 - decay) * v for e, v in zip(expected, values)]
    return [average.numpy() for _, average in optimizer.moving_statistics_pairs], expected


def test_statistics_average_follows_the_weights_recurrence():
    model, optimizer = _compiled_model()
    got, expected = _train_and_expect(model, optimizer)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    # Not a copy of the raw statistics: the last steps moved them away from their average.
    raw = [s.numpy() for s in batchnorm_statistics(model)]
    assert max(np.abs(g - r).max() for g, r in zip(got, raw)) > 1e-3


def test_statistics_average_under_mirrored_strategy_is_the_mean_over_replicas():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("needs the two logical CPUs of tests/conftest.py")
    # No collective ops: each MirroredStrategy numbers its collectives from the same keys, and a
    # later test's strategy in this process would meet these tensors' shapes under its keys.
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        model, optimizer = _compiled_model()
    # Each replica normalises its half of the batch: their statistics differ, and each replica
    # averages its own; read across replicas, the averages are the recurrence over the means.
    per_replica = strategy.experimental_local_results(batchnorm_statistics(model)[0].value)
    got, expected = _train_and_expect(model, optimizer)
    assert not np.allclose(per_replica[0].numpy(), per_replica[1].numpy())
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    # The swap is per replica and exact: after the with-block each replica has its own values back.
    before = [v.numpy().copy() for v in per_replica]
    with ema_weights(model):
        np.testing.assert_allclose(batchnorm_statistics(model)[0].numpy(), got[0], rtol=1e-6)
    np.testing.assert_array_equal([v.numpy() for v in per_replica], before)


def test_ema_weights_swaps_statistics_in_and_back_exactly():
    model, optimizer = _compiled_model()
    got, _ = _train_and_expect(model, optimizer)
    statistics = batchnorm_statistics(model)
    raw = [s.numpy().copy() for s in statistics]
    images = next(_batches(1))[0]
    with ema_weights(model) as used:
        assert used
        for s, g in zip(statistics, got):
            np.testing.assert_array_equal(s.numpy(), g)
        ema_logits = model(images, training=False).numpy()
    for s, r in zip(statistics, raw):
        np.testing.assert_array_equal(s.numpy(), r)
    # Without the statistics' average the EMA model's outputs differ (what the flag fixes).
    plain_model, plain_optimizer = _compiled_model(track=False)
    _train_and_expect(plain_model, plain_optimizer)
    with ema_weights(plain_model):
        plain_logits = plain_model(images, training=False).numpy()
    assert np.abs(ema_logits - plain_logits).max() > 1e-4


def test_statistics_averages_are_checkpointed_and_restored(tmp_path):
    model, optimizer = _compiled_model()
    got, _ = _train_and_expect(model, optimizer)
    path = make_checkpoint(model, optimizer, Progress(4)).save(str(tmp_path / "ckpt"))
    names = [name for name, _ in tf.train.list_variables(path) if name.startswith("optimizer/statistics_averages/")]
    assert len(names) == len(got)

    fresh, fresh_optimizer = _compiled_model()
    status = make_checkpoint(fresh, fresh_optimizer, Progress(4)).restore(path)
    status.assert_existing_objects_matched()
    for (_, average), g in zip(fresh_optimizer.moving_statistics_pairs, got):
        np.testing.assert_array_equal(average.numpy(), g)


@pytest.mark.parametrize("overrides, tracked", [
    ("train.ema_decay=0.999", True),                           # default: on with an EMA
    ("train.ema_decay=0.999,train.ema_batchnorm=false", False),
    ("train.ema_decay=null", False),                           # no EMA: nothing to pair with
])
def test_config_flag(overrides, tracked):
    from effnet_tf import config as config_lib
    from effnet_tf.training.task import attach_optimizer

    config = config_lib.ExperimentConfig()
    config_lib.apply_override_string(config, "model.num_classes=3," + overrides)
    config = config_lib.resolve(config, train_examples=160)  # the optimizer's "auto" values decided
    model = effnet_tf.build_model(blocks=BLOCKS, num_classes=3, classifier_activation=None)
    attach_optimizer(model, config, steps_per_epoch=10)
    pairs = model.optimizer.moving_statistics_pairs
    assert len(pairs) == (len(batchnorm_statistics(model)) if tracked else 0)
