"""The model builder: options, registry, regularization, features, serialization and TPU readiness."""
import numpy as np
import pytest
import keras
import tensorflow as tf

import effnet_tf
from effnet_tf.model import get_regularization, set_regularization

TINY_BLOCKS = ["r1_k3_s1_e1_i16_o8_c1", "r2_k3_s2_e4_i8_o16_c1", "r2_k3_s2_e4_i16_o24_se0.25"]


def tiny(**kwargs):
    kwargs.setdefault("num_classes", 5)
    return effnet_tf.build_model(blocks=TINY_BLOCKS, width=0.5, depth=0.5, **kwargs)


def _images(n=4, size=32, seed=0, dtype="float32"):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(dtype)


def test_list_models_has_every_published_variant():
    names = effnet_tf.list_models()
    for expected in ["efficientnet-b0", "efficientnet-b7", "efficientnet-b8", "efficientnet-l2",
                     "efficientnetv2-b0", "efficientnetv2-b3", "efficientnetv2-s", "efficientnetv2-m",
                     "efficientnetv2-l", "efficientnetv2-xl", "efficientnet-lite0", "efficientnet-lite4",
                     "efficientnet-edgetpu-s", "efficientnet-edgetpu-l"]:
        assert expected in names
    assert len(names) == 26


def test_unknown_name_lists_known_and_closest():
    with pytest.raises(ValueError) as info:
        effnet_tf.build_model("efficientnetv2-ss")
    message = str(info.value)
    assert "Did you mean 'efficientnetv2-s'" in message and "efficientnet-l2" in message
    assert effnet_tf.get_variant("EfficientNetV2B0").name == "efficientnetv2-b0"


def test_variant_table_and_scaled_structure():
    spec = effnet_tf.get_variant("efficientnetv2-m")
    assert (spec.train_size, spec.eval_size, spec.dropout_rate, spec.randaug_magnitude, spec.mixup_alpha) == (
        384, 480, 0.3, 15.0, 0.2)
    model = effnet_tf.build_model("efficientnetv2-s")
    assert model.get_layer("stem_conv").filters == 24
    assert model.get_layer("top_conv").filters == 1280
    assert len(model.block_names) == 2 + 4 + 4 + 6 + 9 + 15
    v1 = effnet_tf.build_model("efficientnet-b4", include_top=False)
    assert v1.get_layer("stem_conv").filters == 48  # round_filters(32 * 1.4) = 48
    assert v1.get_layer("top_conv").filters == 1792
    assert v1.get_layer("block1a").bn_momentum == 0.99
    assert model.get_layer("block1a").bn_momentum == 0.9


def test_v1_rounding_guard_only_in_v1():
    from effnet_tf.model.scaling import round_filters
    # 119 * 0.1 = 11.9: int(11.9 + 4) // 8 * 8 = 8 lost 33% (> 10%), so V1 adds 8; V2 keeps 8.
    assert round_filters(119, 0.1, v1_guard=False) == 8
    assert round_filters(119, 0.1, v1_guard=True) == 16
    assert round_filters(40, 1.1, v1_guard=True) == 48  # 44 -> 48: no guard needed
    assert round_filters(32, 1.8, v1_guard=True) == round_filters(32, 1.8, v1_guard=False) == 56


def test_stochastic_depth_rates_rise_linearly_over_scaled_blocks():
    model = effnet_tf.build_model("efficientnetv2-b0", drop_connect_rate=0.2)
    blocks = [model.get_layer(n) for n in model.block_names]
    n = len(blocks)
    np.testing.assert_allclose([b.drop_connect_rate for b in blocks], [0.2 * j / n for j in range(n)])


def test_include_top_pooling_and_logits():
    x = _images()
    assert tiny(include_top=False)(x).shape[-1] == tiny(include_top=False).get_layer("top_conv").filters
    assert tiny(include_top=False, pooling="avg")(x).shape.rank == 2
    assert tiny(include_top=False, pooling="max")(x).shape.rank == 2
    probs = tiny()(x).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert tiny(classifier_activation=None).layers[-1].activation.__name__ == "linear"
    with pytest.raises(ValueError, match="pooling must be one of"):
        tiny(include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="num_classes must be an int >= 1, got 0"):
        tiny(num_classes=0)


def test_uint8_pixels_and_preprocessing_switch():
    model = tiny(classifier_activation=None)
    x = _images(dtype="uint8")
    np.testing.assert_allclose(model(x).numpy(), model(x.astype("float32")).numpy(), atol=1e-6)
    raw = tiny(include_preprocessing=False)
    assert "normalization" not in [layer.name for layer in raw.layers]
    assert tiny().get_layer("normalization").mean == pytest.approx([123.675, 116.28, 103.53])
    s = effnet_tf.build_model("efficientnetv2-s", include_top=False)
    assert s.get_layer("normalization").mean == [128.0] * 3


def test_one_model_runs_at_every_size():
    model = tiny()
    for size in (32, 48, 64):
        assert model(_images(size=size)).shape == (4, 5)


def test_feature_extractor_strides():
    model = effnet_tf.build_model("efficientnetv2-b0", include_top=False, width=0.25, depth=0.25)
    features = effnet_tf.feature_extractor(model)(_images(2, 64))
    assert sorted(features) == ["stride_16", "stride_2", "stride_32", "stride_4", "stride_8"]
    for stride in (2, 4, 8, 16, 32):
        assert features[f"stride_{stride}"].shape[1] == 64 // stride
    with pytest.raises(ValueError, match=r"Strides \[64\] are not in this model"):
        effnet_tf.feature_extractor(model, strides=[64])


def test_set_regularization_changes_rates_and_training_behaviour():
    model = tiny(dropout_rate=0.0, drop_connect_rate=0.0)
    features = keras.Model(model.input, model.get_layer("avg_pool").output)(_images(8)) + 1.0
    dropout = model.get_layer("top_dropout")
    np.testing.assert_array_equal(dropout(features, training=True), features)
    set_regularization(model, dropout_rate=0.5, drop_connect_rate=0.3)
    dropped = (dropout(features, training=True).numpy() == 0).mean()
    assert 0.3 < dropped < 0.7
    rates = get_regularization(model)
    assert rates["dropout_rate"] == 0.5 and rates["drop_connect_rate"] == pytest.approx(0.3)
    blocks = [model.get_layer(n) for n in model.block_names]
    assert blocks[-1].drop_connect_rate == pytest.approx(0.3 * (len(blocks) - 1) / len(blocks))


def test_keras_file_round_trip_safe_mode(tmp_path):
    model = tiny(dropout_rate=0.3)
    x = _images()
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded).__name__ == "EfficientNet"
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_get_config_is_plain_data_and_rebuilds():
    model = effnet_tf.build_model("efficientnetv2-b0", num_classes=7, width=0.25, depth=0.25)
    config = model.get_config()
    assert config["variant"] == "efficientnetv2-b0" and config["width"] == 0.25
    clone = effnet_tf.EfficientNet.from_config(config)
    assert clone.count_params() == model.count_params()
    assert model.variant.eval_size == 224


@pytest.mark.parametrize("jit_compile, policy", [(True, "float32"), (False, "mixed_bfloat16"),
                                                  pytest.param(True, "mixed_bfloat16", marks=pytest.mark.slow)])
def test_train_step_xla_and_bfloat16(jit_compile, policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = tiny(classifier_activation=None, dropout_rate=0.2, drop_connect_rate=0.2)
        model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=jit_compile,
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        x = _images(8, dtype="uint8")
        y = keras.utils.to_categorical(np.arange(8) % 5, 5)
        before = model.get_layer("stem_conv").kernel.numpy().copy()
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert not np.allclose(before, model.get_layer("stem_conv").kernel.numpy())
        if policy == "mixed_bfloat16":
            assert model.get_layer("block2a").compute_dtype == "bfloat16"
            assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
