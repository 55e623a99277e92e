"""The block layers on their own: shapes, residual rules, SE, stochastic depth, serialization."""
import numpy as np
import pytest
import keras
import tensorflow as tf

from effnet_tf.blocks.layers import ImageNormalization, ScheduledDropout, SqueezeExcite, StochasticDepth
from effnet_tf.blocks.mbconv import FusedMBConv, MBConv


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_stochastic_depth_is_identity_at_inference_and_per_sample_in_training():
    layer = StochasticDepth(0.5, seed=1)
    x = np.ones((512, 2, 2, 3), "float32")
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = layer(x, training=True).numpy()
    per_sample = y.reshape(512, -1)
    # Each sample is either dropped entirely or kept and scaled by 1/(1-rate) = 2.
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))
    kept = (per_sample[:, 0] > 0).mean()
    assert 0.4 < kept < 0.6  # Binomial(512, .5): 5 sigma is ±0.11
    assert abs(y.mean() - 1.0) < 0.25  # unbiased


def test_set_rate_changes_behaviour_inside_a_traced_function_without_retracing():
    layer = StochasticDepth(0.0, seed=3)
    layer.build((256, 1, 1, 1))  # models build their layers before any train step is traced
    traces = []

    @tf.function
    def step(x):
        traces.append(1)
        return layer(x, training=True)

    x = tf.ones((256, 1, 1, 1))
    np.testing.assert_array_equal(step(x), x)
    layer.set_rate(0.75)
    dropped = (step(x).numpy().ravel() == 0).mean()
    assert 0.6 < dropped < 0.9
    assert len(traces) == 1


def test_scheduled_dropout_rate_and_bad_rate():
    layer = ScheduledDropout(0.0)
    x = np.ones((64, 100), "float32")
    np.testing.assert_array_equal(layer(x, training=True), x)
    layer.set_rate(0.5)
    y = layer(x, training=True).numpy()
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\), got 1.0"):
        layer.set_rate(1.0)


def test_squeeze_excite_matches_hand_computation():
    layer = SqueezeExcite(2, activation="silu")
    x = _x((1, 3, 3, 4))
    y = layer(x).numpy()
    w1, b1 = layer.reduce.get_weights()
    w2, b2 = layer.expand.get_weights()
    pooled = x.mean(axis=(1, 2))  # [1, 4]
    hidden = pooled @ w1[0, 0] + b1
    hidden = hidden / (1 + np.exp(-hidden))  # silu
    gate = 1 / (1 + np.exp(-(hidden @ w2[0, 0] + b2)))
    np.testing.assert_allclose(y, x * gate[:, None, None, :], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [MBConv, FusedMBConv])
@pytest.mark.parametrize("stride, cin, cout, skip, residual", [
    (1, 8, 8, True, True), (2, 8, 8, True, False), (1, 8, 16, True, False), (1, 8, 8, False, False),
])
def test_residual_only_for_stride1_same_filters_and_skip(cls, stride, cin, cout, skip, residual):
    block = cls(cin, cout, kernel_size=3, stride=stride, expand_ratio=4, se_ratio=0.25, skip=skip)
    y = block(_x((2, 9, 9, cin)))
    assert y.shape == (2, 9 // stride + (9 % stride), 9 // stride + (9 % stride), cout)
    assert block.has_residual is residual
    if residual:
        # Zero the projection BN's gamma/beta: the branch outputs 0, so the block is the identity.
        block.project_bn.gamma.assign(np.zeros(cout, "float32"))
        block.project_bn.beta.assign(np.zeros(cout, "float32"))
        x = _x((2, 9, 9, cin), seed=5)
        np.testing.assert_allclose(block(x, training=False), x, atol=1e-6)


def test_fused_e1_is_a_single_conv_bn_act():
    block = FusedMBConv(8, 16, kernel_size=3, stride=2, expand_ratio=1)
    block(_x((1, 8, 8, 8)))
    names = sorted(w.path for w in block.weights)
    assert not any("expand" in n for n in names)
    assert block.project_conv.kernel.shape == (3, 3, 8, 16)
    assert block.project_act is not None


def test_mbconv_e1_has_no_expansion_and_weight_names_are_stable():
    block = MBConv(16, 16, kernel_size=5, stride=1, expand_ratio=1, se_ratio=0.25, name="block1a")
    block(_x((1, 6, 6, 16)))
    paths = {w.path for w in block.weights}
    assert "block1a/dwconv/kernel" in paths and "block1a/se/reduce/kernel" in paths
    assert not any("expand_conv" in p for p in paths)
    assert block.se.reduce.kernel.shape == (1, 1, 16, 4)  # max(1, int(16 * 0.25))


@pytest.mark.parametrize("layer", [
    StochasticDepth(0.1, seed=2), ScheduledDropout(0.3),
    ImageNormalization([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]), SqueezeExcite(3),
    MBConv(8, 16, 5, 2, 6.0, 0.25, True, 0.1, 0.9, 1e-3, "silu"),
    FusedMBConv(8, 8, 3, 1, 4.0, None, False, 0.2, 0.99, 1e-3, "relu"),
])
def test_get_config_round_trip(layer):
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert clone.get_config() == layer.get_config()


def test_image_normalization_takes_uint8_and_matches_formula():
    layer = ImageNormalization([10.0, 20.0, 30.0], [2.0, 4.0, 8.0])
    pixels = np.array([[[[0, 100, 255]]]], "uint8")
    np.testing.assert_allclose(layer(pixels), [[[[-5.0, 20.0, 28.125]]]])


def test_bad_block_arguments():
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        MBConv(8, 8, stride=3)
    with pytest.raises(ValueError, match="drop_connect_rate must be in"):
        FusedMBConv(8, 8, drop_connect_rate=1.5)
    with pytest.raises(ValueError, match="input has 4 channels, the block expects 8"):
        MBConv(8, 8)(_x((1, 4, 4, 4)))


def test_fused_batch_norm_trains_like_keras_and_updates_unbiased_moving_variance():
    from effnet_tf.blocks.batch_norm import FusedBatchNormalization

    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 5, 5, 8)).astype("float32")
    ours, reference = FusedBatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    for layer in (ours, reference):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 1.5, 8))
        layer.beta.assign(np.linspace(-1.0, 1.0, 8))
    np.testing.assert_allclose(ours(x, training=True), reference(x, training=True), atol=1e-5)
    n = 4 * 5 * 5
    batch_mean, batch_var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(ours.moving_mean.numpy(), 0.1 * batch_mean, rtol=1e-5)
    # The fused kernel feeds the unbiased variance to the moving average (as Keras 2 / official code).
    np.testing.assert_allclose(ours.moving_variance.numpy(), 0.9 + 0.1 * batch_var * n / (n - 1), rtol=1e-5)
    # Inference (the fused kernel with moving statistics) matches Keras' formula.
    ours.moving_variance.assign(reference.moving_variance)
    np.testing.assert_allclose(ours(x, training=False), reference(x, training=False), atol=1e-5)


def _bn_pair(channels=8, seed=1):
    from effnet_tf.blocks.batch_norm import FusedBatchNormalization

    rng = np.random.default_rng(seed)
    ours, reference = FusedBatchNormalization(), keras.layers.BatchNormalization()
    for layer in (ours, reference):
        layer.build((None, 5, 5, channels))
    values = [rng.uniform(0.5, 1.5, channels), rng.normal(0, 1, channels),
              rng.normal(0, 2, channels), rng.uniform(0.2, 4.0, channels)]
    for layer in (ours, reference):
        layer.set_weights(values)
    return ours, reference, values


def test_fused_batch_norm_inference_uses_moving_statistics_by_hand():
    ours, _, (gamma, beta, mean, var) = _bn_pair()
    x = np.random.default_rng(2).normal(1.0, 2.0, (3, 5, 5, 8)).astype("float32")
    expected = (x - mean) / np.sqrt(var + 1e-3) * gamma + beta
    np.testing.assert_allclose(ours(x, training=False), expected, atol=1e-5)
    np.testing.assert_allclose(ours(x), expected, atol=1e-5)  # training=None is inference


def test_frozen_fused_batch_norm_keeps_statistics_when_training():
    # Keras' rule: trainable=False normalizes with the moving statistics and never updates them,
    # even inside a training step (the usual way to fine-tune with frozen BN).
    ours, reference, values = _bn_pair()
    ours.trainable = reference.trainable = False
    x = tf.constant(np.random.default_rng(3).normal(1.0, 2.0, (3, 5, 5, 8)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours, y_ref = ours(x, training=True), reference(x, training=True)
        loss_ours, loss_ref = tf.reduce_sum(y_ours * y_ours), tf.reduce_sum(y_ref * y_ref)
    np.testing.assert_allclose(y_ours, y_ref, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss_ours, x), tape.gradient(loss_ref, x), rtol=1e-4, atol=1e-4)
    for got, want in zip(ours.get_weights(), values):
        np.testing.assert_array_equal(got, want.astype("float32"))


def test_fused_batch_norm_gradients_match_keras_in_training():
    ours, reference, _ = _bn_pair()
    x = tf.constant(np.random.default_rng(4).normal(1.0, 2.0, (3, 5, 5, 8)).astype("float32"))
    grads = []
    for layer in (ours, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x, training=True)))
        grads.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_fused_batch_norm_bfloat16_inference_matches_keras():
    ours, reference, _ = _bn_pair()
    ours_bf16 = type(ours)(dtype="mixed_bfloat16")
    ours_bf16.build((None, 5, 5, 8))
    ours_bf16.set_weights(ours.get_weights())
    x = np.random.default_rng(5).normal(1.0, 2.0, (3, 5, 5, 8)).astype("float32")
    y = ours_bf16(x, training=False)
    assert y.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y, tf.float32), reference(x, training=False), atol=0.05, rtol=0.02)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "keras_ops"])
def test_batch_norm_statistics_are_averaged_over_replicas(fused):
    """Each replica updates its own moving statistics; any read across replicas (checkpoint,
    evaluation, get_weights, export) sees their mean, so every worker saves the same values."""
    from effnet_tf.blocks.batch_norm import FusedBatchNormalization, fused_batch_norm

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("needs two logical CPUs (tests/conftest.py)")
    strategy = tf.distribute.MirroredStrategy(devices[:2])
    with strategy.scope():
        layer = FusedBatchNormalization(momentum=0.0)  # moving statistics = the last batch's
        layer.build((None, 2, 2, 1))
    # Replica r sees a constant batch of value 1 + 2r: batch means 1 and 3, the average is 2.
    batches = strategy.experimental_distribute_values_from_function(
        lambda context: tf.fill((4, 2, 2, 1), 1.0 + 2.0 * context.replica_id_in_sync_group))

    @tf.function
    def step(x):
        strategy.run(lambda v: layer(v, training=True), args=(x,))

    with fused_batch_norm(fused):
        step(batches)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [2.0], rtol=1e-6)
    np.testing.assert_allclose(layer.get_weights()[2], [2.0], rtol=1e-6)
    local = [v.numpy() for v in strategy.experimental_local_results(layer.moving_mean.value)]
    np.testing.assert_allclose(np.ravel(local), [1.0, 3.0], rtol=1e-6)  # kept per replica
