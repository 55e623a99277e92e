"""Parity with the references: parameter counts of every variant and weight import from keras.applications."""
import numpy as np
import pytest
import keras

import effnet_tf
from effnet_tf.blocks.batch_norm import fused_batch_norm
from effnet_tf.blocks.layers import IMAGENET_MEAN_PIXELS, IMAGENET_STD_PIXELS

from reference_values import EDGE_TRAINABLE_PARAMS, REFERENCE_PARAMS  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session()


BIG = ("efficientnetv2-l", "efficientnetv2-xl")  # built and counted in the full run only


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n
                                  for n in sorted(REFERENCE_PARAMS)])
def test_parameter_count_matches_reference(name):
    assert effnet_tf.build_model(name).count_params() == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnetv2-b0", "efficientnetv2-s"])
def test_parameter_count_matches_keras_applications_like_for_like(name):
    spec = effnet_tf.get_variant(name)
    reference = getattr(keras.applications, spec.keras_application)(weights=None)
    extra = 7 if spec.family == "v1" else 0  # keras' V1 input Normalization: mean 3, variance 3, count 1
    assert effnet_tf.build_model(name).count_params() == reference.count_params() - extra


@pytest.mark.slow
def test_b8_and_l2_build_bigger_than_b7():
    b8 = effnet_tf.build_model("efficientnet-b8").count_params()
    assert REFERENCE_PARAMS["efficientnet-b7"] < b8
    assert len(effnet_tf.build_model("efficientnet-b8").block_names) == sum(
        int(np.ceil(3.6 * r)) for r in (1, 2, 2, 3, 3, 4, 1))


def _randomize(model, seed):
    """Random weights everywhere, BN statistics included, so a wrong copy cannot go unnoticed."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n)])
        elif layer.weights and not isinstance(layer, keras.layers.Normalization):
            layer.set_weights([w.numpy() * rng.uniform(0.8, 1.2, w.shape) for w in layer.weights])


def _keras_reference(spec, size, weights_from=None):
    constructor = getattr(keras.applications, spec.keras_application)
    model = constructor(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    if spec.family == "v1":
        # With weights=None keras' V1 Normalization is the identity; set the released weights'
        # normalization (what weights="imagenet" computes) to compare like with like.
        norm = next(l for l in model.layers if isinstance(l, keras.layers.Normalization))
        norm.set_weights([np.array(IMAGENET_MEAN_PIXELS) / 255.0,
                          (np.array(IMAGENET_STD_PIXELS) / 255.0) ** 2, np.array(0)])
        norm.finalize_state()  # Normalization caches mean/variance as tensors
    if weights_from is not None:
        model.set_weights(weights_from.get_weights())
    return model


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnetv2-b0",
                                  pytest.param("efficientnetv2-s", marks=pytest.mark.slow)])
def test_weight_import_gives_same_logits_at_two_sizes(name):
    spec = effnet_tf.get_variant(name)
    reference = _keras_reference(spec, 64)
    _randomize(reference, seed=1)
    ours = effnet_tf.build_model(name, classifier_activation=None)
    counts = effnet_tf.load_keras_applications_weights(ours, reference)
    assert counts["head"] == 1
    for size in (64, 75):
        sized = reference if size == 64 else _keras_reference(spec, size, weights_from=reference)
        x = np.random.default_rng(size).uniform(0, 255, (2, size, size, 3)).astype("float32")
        expected = sized(x, training=False).numpy()
        # Keras' BN ops, so the copy is checked bitwise-tight: this random V2-S amplifies rounding
        # differences to O(1) (activations reach 1e5). The fused kernel is compared below.
        with fused_batch_norm(False):
            got = ours(x, training=False).numpy()
        assert np.abs(expected).max() > 0.05  # logits 250x the tolerance, not ~1e-3 probabilities
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_weight_import_from_weights_file_and_fine_tune_head(tmp_path):
    spec = effnet_tf.get_variant("efficientnetv2-b0")
    reference = _keras_reference(spec, 64)
    _randomize(reference, seed=2)
    path = str(tmp_path / "b0.weights.h5")
    reference.save_weights(path)
    ours = effnet_tf.build_model("efficientnetv2-b0", classifier_activation=None)
    effnet_tf.load_keras_applications_weights(ours, path)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    with fused_batch_norm(False):
        np.testing.assert_allclose(ours(x).numpy(), reference(x).numpy(), atol=1e-4)

    # Fine-tuning on 5 classes: the body is copied, the 1000-class head is not.
    five = effnet_tf.build_model("efficientnetv2-b0", num_classes=5)
    with pytest.raises(ValueError, match="'predictions' does not match.*skip_mismatched_head"):
        effnet_tf.load_keras_applications_weights(five, reference)
    counts = effnet_tf.load_keras_applications_weights(five, reference, skip_mismatched_head=True)
    assert counts["head"] == 0
    np.testing.assert_array_equal(five.get_layer("top_conv").kernel.numpy(),
                                  reference.get_layer("top_conv").kernel.numpy())


def test_weight_import_names_first_mismatching_layer():
    reference = keras.applications.EfficientNetV2B1(weights=None, input_shape=(64, 64, 3))
    ours = effnet_tf.build_model("efficientnetv2-b0")
    with pytest.raises(ValueError, match="source model has weighted layers that match nothing.*'block1b_project_conv'.*34 in all"):
        effnet_tf.load_keras_applications_weights(ours, reference)
    wider = effnet_tf.build_model("efficientnetv2-b0", width=1.1)
    # 48 * 1.1 rounds to 56 filters: stage 3 is the first that differs.
    with pytest.raises(ValueError, match="Layer 'block3a/project_conv' does not match source layer 'block3a_project_conv'"):
        effnet_tf.load_keras_applications_weights(wider, reference)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        effnet_tf.load_keras_applications_weights(ours, "/nonexistent/missing.h5")


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnetv2-b0"])
def test_fused_batch_norm_model_matches_keras_batch_norm_ops(name):
    """The whole model with the fused BN kernel against the same weights run with Keras' BN ops.

    BN moving statistics come from the batch itself (momentum 0), so the network is well
    conditioned and the only difference is rounding order (measured: 6e-6 to 1e-5 of the
    largest logit).
    """
    model = effnet_tf.build_model(name, classifier_activation=None, dropout_rate=0.0,
                                  drop_connect_rate=0.0, bn_momentum=0.0)
    _randomize(model, seed=3)
    x = np.random.default_rng(4).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    with fused_batch_norm(False):
        expected_train = model(x, training=True).numpy()
    fused_train = model(x, training=True).numpy()  # also sets the moving statistics to this batch's
    with fused_batch_norm(False):
        expected = model(x, training=False).numpy()
    fused = model(x, training=False).numpy()
    for got, want in ((fused_train, expected_train), (fused, expected)):
        scale = np.abs(want).max()
        assert scale > 0.1
        np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=0)
    # A wrong statistic is far outside that bound: shift one BN's moving mean by 0.1.
    bn = model.get_layer("top_bn")
    bn.moving_mean.assign(bn.moving_mean.numpy() + 0.1)
    assert np.abs(model(x, training=False).numpy() - expected).max() > 1e-2 * np.abs(expected).max()


@pytest.mark.parametrize("name", sorted(EDGE_TRAINABLE_PARAMS))
def test_edge_variants_have_the_published_parameter_counts(name):
    import numpy as np

    model = effnet_tf.build_model(name)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    value, unit = EDGE_TRAINABLE_PARAMS[name]
    if unit == 1:
        assert trainable == value
    else:
        assert round(trainable / unit) * unit == pytest.approx(value), trainable


def test_edge_variants_are_built_as_the_official_builders_say():
    """Lite: ReLU6, no squeeze-excite, stem (32) and head (1280) unscaled, first and last stage
    not repeated more; EdgeTPU: ReLU, Fused-MBConv first, a 32-channel stem scaled with width.
    Both normalize (x - 127) / 128. Everything survives get_config."""
    lite4 = effnet_tf.build_model("efficientnet-lite4")
    layers = {layer.name: layer for layer in lite4.layers}
    assert layers["stem_conv"].filters == 32 and layers["top_conv"].filters == 1280
    assert [n for n in lite4.block_names if n.startswith(("block1", "block7"))] == ["block1a", "block7a"]
    assert layers["stem_activation"].get_config()["activation"] == "relu6"
    assert not [w for w in lite4.weights if "se_" in w.path or "/se" in w.path]
    normalization = layers["normalization"]
    np.testing.assert_allclose(normalization(np.array([[[[127.0, 255.0, 0.0]]]], "float32")).numpy(),
                               [[[[0.0, 1.0, -127.0 / 128.0]]]], atol=1e-6)
    b4 = effnet_tf.build_model("efficientnet-b4")  # the same width/depth with the V1 rules
    assert b4.get_layer("stem_conv").filters == 48 and b4.get_layer("top_conv").filters == 1792
    edge_l = effnet_tf.build_model("efficientnet-edgetpu-l")
    assert edge_l.get_layer("stem_conv").filters == 40  # round(32 x 1.2)
    assert edge_l.get_layer("stem_activation").get_config()["activation"] == "relu"
    assert type(edge_l.get_layer("block1a")).__name__ == "FusedMBConv"
    assert type(edge_l.get_layer("block4a")).__name__ == "MBConv"
    rebuilt = effnet_tf.EfficientNet.from_config(edge_l.get_config())
    assert rebuilt.count_params() == edge_l.count_params()
    assert rebuilt.get_config()["stem_filters"] == 32 and lite4.get_config()["fix_stem_head"] is True
