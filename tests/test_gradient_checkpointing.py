"""Gradient checkpointing: the plain model's gradients and BN statistics (default strategy,
MirroredStrategy, XLA), the blocks really recompute, and the flag serializes and exports."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import effnet_tf
from effnet_tf.blocks import mbconv
from effnet_tf.export import export_all

# MBConv with and without expansion/SE, Fused-MBConv single and expanded, residual and strided.
BLOCKS = ["r1_k3_s1_e1_i8_o8_c1", "r2_k3_s2_e2_i8_o16_c1", "r2_k3_s2_e2_i16_o16_se0.25"]


def _model(checkpointing, **kwargs):
    keras.utils.set_random_seed(0)
    return effnet_tf.build_model(blocks=BLOCKS, num_classes=5, drop_connect_rate=0.0, dropout_rate=0.0,
                                 classifier_activation=None, gradient_checkpointing=checkpointing, **kwargs)


def _data():
    rng = np.random.default_rng(1)
    return rng.uniform(0, 255, (4, 24, 24, 3)).astype("float32"), np.eye(5, dtype="float32")[[0, 1, 2, 3]]


def _gradients(model, images, labels, jit_compile=False):
    @tf.function(jit_compile=jit_compile)
    def gradients():
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(labels, logits, from_logits=True))
        return tape.gradient(loss, model.trainable_variables)

    return [g.numpy() for g in gradients()]


def _relative_error(got, expected):
    return max(np.abs(g - e).max() / (np.abs(e).max() + 1e-12) for g, e in zip(got, expected))


@pytest.mark.parametrize("jit_compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["graph", "xla"])
def test_gradients_and_statistics_equal_the_plain_model(jit_compile):
    images, labels = _data()
    plain, checkpointed = _model(False), _model(True)
    checkpointed.set_weights(plain.get_weights())
    expected = _gradients(plain, images, labels, jit_compile)
    got = _gradients(checkpointed, images, labels, jit_compile)
    assert all(np.abs(g).max() > 0 for g in expected)
    assert _relative_error(got, expected) <= 1e-5
    # The recomputation normalises with the batch moments but does not move the moving
    # statistics a second time: they equal the plain model's after the step.
    for p, c in zip(plain.non_trainable_variables, checkpointed.non_trainable_variables):
        np.testing.assert_allclose(c.numpy(), p.numpy(), rtol=1e-6, atol=1e-7)


def test_gradients_equal_under_mirrored_strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("needs the two logical CPUs of tests/conftest.py")
    # No collective ops: each MirroredStrategy numbers its collectives from the same keys, and a
    # later test's strategy in this process would meet these tensors' shapes under its keys.
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    images, labels = _data()
    results = []
    for checkpointing in (False, True):
        with strategy.scope():
            model = _model(checkpointing)

        @tf.function
        def gradients(images, labels):
            def replica_step(images, labels):
                with tf.GradientTape() as tape:
                    logits = model(images, training=True)
                    loss = tf.reduce_mean(keras.losses.categorical_crossentropy(labels, logits, from_logits=True))
                return tape.gradient(loss, model.trainable_variables)

            per_replica = strategy.run(replica_step, args=(images, labels))
            return [strategy.reduce("SUM", g, axis=None) for g in per_replica]

        dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, labels)))
        batch = next(iter(dataset))
        results.append([g.numpy() for g in gradients(*batch)])
    assert _relative_error(results[1], results[0]) <= 1e-5


def test_blocks_recompute_in_the_backward_pass(monkeypatch):
    """Each block body runs once in the forward pass and once more when the gradient is taken
    (without checkpointing, once)."""
    images, labels = _data()
    for checkpointing, calls_per_block in ((False, 1), (True, 2)):
        model = _model(checkpointing)
        calls = []
        for cls in (mbconv.MBConv, mbconv.FusedMBConv):
            original = cls._body

            def counting(self, inputs, training, _original=original):
                calls.append(self.name)
                return _original(self, inputs, training)

            monkeypatch.setattr(cls, "_body", counting)
        _gradients(model, images, labels)
        monkeypatch.undo()
        blocks = len(model.block_names)
        assert len(calls) == blocks * calls_per_block, (checkpointing, calls)


def test_flag_serializes_and_the_model_exports(tmp_path):
    model = _model(True)
    assert model.gradient_checkpointing and model.get_config()["gradient_checkpointing"]
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.gradient_checkpointing
    assert all(reloaded.get_layer(name).gradient_checkpointing for name in reloaded.block_names)
    model.gradient_checkpointing = False  # settable on a built model (e.g. a loaded one)
    assert not any(model.get_layer(name).gradient_checkpointing for name in model.block_names)
    model.gradient_checkpointing = True
    # Inference is untouched, so exports are the plain model's.
    images, _ = _data()
    np.testing.assert_allclose(reloaded(images).numpy(), model(images).numpy(), atol=1e-5)
    target = str(tmp_path / "export")
    export_all(model, target, formats=("saved_model",), image_size=24, report=False)
    served = tf.saved_model.load(os.path.join(target, "saved_model")).signatures["predict_pixels"]
    probabilities = served(tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, tf.nn.softmax(model(images)).numpy(), atol=1e-5)


def test_config_flag_reaches_the_training_model_only():
    from effnet_tf import config as config_lib
    from effnet_tf.model.from_config import build_from_config

    config = config_lib.ExperimentConfig()
    config_lib.apply_override_string(config, "model.gradient_checkpointing=true,model.num_classes=3")
    assert build_from_config(config.model).gradient_checkpointing
    assert not build_from_config(config.model, for_training=False).gradient_checkpointing
