"""The training loop and the driver in-process on tiny models: compile control, EMA, weight decay,
scheduled dropout, MirroredStrategy, XLA + bfloat16, NaN stop, eval/export, strategy selection."""
import json
import os
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet_tf import config as config_lib
from effnet_tf.config import apply_override_string
from effnet_tf.run.driver import Driver
from effnet_tf.training.callbacks import NonFiniteLossError
from effnet_tf.training.ema import ema_weights
from effnet_tf.training.weight_decay import KernelL2, apply_weight_decay, kernel_variables
from effnet_tf.training.plan import make_plan
from effnet_tf.training.strategy import TPUUnavailableError, create_strategy, detect_strategy

TINY_BLOCKS = "[r1_k3_s1_e1_i16_o8_c1,r1_k3_s2_e2_i8_o16_c1,r1_k3_s2_e2_i16_o16_se0.25]"


def tiny_config(model_dir, extra=""):
    """A ~10k-parameter network on 32-64 px synthetic shapes; 4 steps of 16 images per epoch."""
    config = config_lib.ExperimentConfig()
    apply_override_string(
        config,
        f"model.name=null,model.blocks={TINY_BLOCKS},data.name=synthetic,data.num_classes=4,"
        "data.train_examples=64,data.eval_examples=32,train.global_batch_size=16,train.epochs=2,"
        "train.image_size=64,eval.image_size=64,progressive.min_image_size=32,train.warmup_epochs=0,"
        "train.base_learning_rate=0.016,train.randaug_magnitude=0,runtime.verbose=0,"
        "eval.frequency=end,export.enabled=false,runtime.mode=train,runtime.tensorboard=false,"
        f"runtime.model_dir={model_dir}" + ("," + extra if extra else ""),
    )
    return config


def read_progress(model_dir):
    with open(os.path.join(model_dir, "progress.jsonl")) as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.slow
def test_one_program_per_size_and_returning_sizes_reuse_it(tmp_path):
    # Random mode, one epoch per block: pick a seed whose schedule revisits a size.
    config = tiny_config(tmp_path, "progressive.mode=random,progressive.random_interval_epochs=1,"
                                   "train.epochs=5,progressive.bucket_step=16,runtime.seed=0")
    seed = next(s for s in range(100) if _revisits(config, s))
    apply_override_string(config, f"runtime.seed={seed}")
    driver = Driver(config)
    sizes = [stage.image_size for stage in driver.plan.stages]
    assert len(sizes) == 5 and len(set(sizes)) < len(sizes)
    driver.train()
    cache = driver.loop.train_cache
    traced_sizes = [shape[1] for _, shape in cache.traces]
    # Observed traces: exactly one per distinct size, each fully static (no None dimension).
    assert cache.trace_count == len(set(sizes))
    assert sorted(traced_sizes) == sorted(set(sizes))
    assert all(None not in shape for _, shape in cache.traces)
    epochs = [r for r in read_progress(tmp_path) if r["event"] == "epoch"]
    assert [r["image_size"] for r in epochs] == sizes
    # The compile count logged per epoch only grows when a new size appears.
    assert [r["train_functions"] for r in epochs] == [len(set(sizes[: i + 1])) for i in range(5)]
    # Each stage's input iterator was handed to a release thread when its fit returned (destroying
    # a used tf.data iterator can block for up to a minute), and every one was destroyed there.
    assert len(cache.released) == 5
    for thread in cache.released:
        thread.join(120)
        assert not thread.is_alive() and thread is not threading.current_thread()


@pytest.mark.slow
def test_epoch_records_split_the_time_and_eval_every_epochs(tmp_path):
    """progress.jsonl says where each epoch's time went; eval.every_epochs evaluates at fixed
    epochs (here 3 and the last, 4) whatever the stages."""
    config = tiny_config(tmp_path, "progressive.mode=staged,progressive.num_stages=2,train.epochs=4,"
                                   "runtime.mode=train_and_eval,eval.every_epochs=3")
    driver = Driver(config)
    assert [driver.plan.should_evaluate(e) for e in range(4)] == [False, False, True, True]
    driver.run()
    epochs = [r for r in read_progress(tmp_path) if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    # Evaluated after epochs 3 and 4 only, and the evaluation's time is its own.
    assert [("val_top1" in r, "eval_seconds" in r) for r in epochs] == [(False, False), (False, False),
                                                                        (True, True), (True, True)]
    assert all(r["eval_seconds"] > 0 for r in epochs[2:])
    # A compile in the first epoch of each stage (a new size), none in the others.
    compiled = [r["train_functions"] > (epochs[i - 1]["train_functions"] if i else 0) for i, r in enumerate(epochs)]
    assert compiled == [True, False, True, False]
    assert [("compile_seconds" in r) for r in epochs] == compiled
    assert [("setup_seconds" in r) for r in epochs] == [True, False, True, False]  # a stage's first epoch
    for r in epochs:
        assert 0 < r.get("compile_seconds", 0) < r["train_seconds"] or "compile_seconds" not in r
        # Throughput counts train time only (4 steps of 16 images).
        assert r["images_per_second"] == pytest.approx(4 * 16 / r["train_seconds"], rel=0.02)


def _revisits(config, seed):
    config = config_lib.copy_config(config)
    config.runtime.seed = seed
    plan = make_plan(config, num_classes=4, train_examples=64)
    assert plan.buckets == (32, 48, 64)
    sizes = [s.image_size for s in plan.stages]
    return len(set(sizes)) >= 2 and any(sizes[i] in sizes[:i - 1] for i in range(2, len(sizes)))


def test_keras_alone_would_relax_to_a_dynamic_shape():
    """Why the cache exists: Keras' own train function goes shape-polymorphic after 2 sizes."""
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    shapes = []
    original = model.train_step

    def spy(data):
        shapes.append(tuple(data[0].shape))
        return original(data)

    model.train_step = spy
    for size in (8, 12, 16):
        model.fit(np.zeros((4, size, size, 3), "float32"), np.zeros((4, 2), "float32"), batch_size=4, verbose=0)
    assert shapes[-1][1] is None  # relaxed: (4, None, None, 3) -- a TPU cannot compile that once


@pytest.mark.slow
def test_stages_keep_trained_weights_and_eval_uses_ema(tmp_path):
    config = tiny_config(tmp_path, "progressive.mode=staged,progressive.num_stages=2,train.ema_decay=0.9,"
                                   "train.ema_warmup=false")
    driver = Driver(config)
    trainer = driver.loop
    seen = {}

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen["weights"] = [v.numpy().copy() for v in trainer.model.trainable_variables]

        def on_train_begin(self, logs=None):  # start of each stage's fit: continue from the trained weights
            if "weights" in seen:
                now = [v.numpy() for v in trainer.model.trainable_variables]
                seen["continued"] = all(np.array_equal(a, b) for a, b in zip(now, seen["weights"]))

    original = trainer.callbacks
    trainer.callbacks = lambda evaluate: original(evaluate) + [Spy()]
    driver.train()
    assert seen["continued"] is True
    weights = [v.numpy() for v in trainer.model.trainable_variables]
    averages = [v.numpy() for v in trainer.optimizer._model_variables_moving_average]
    # After fit the model holds the last trained weights, not the EMA (Keras would have copied it in).
    assert all(np.array_equal(w, s) for w, s in zip(weights, seen["weights"]))
    assert any(not np.allclose(w, a) for w, a in zip(weights, averages))
    with ema_weights(trainer.model) as used:
        assert used
        assert all(np.array_equal(v.numpy(), a) for v, a in zip(trainer.model.trainable_variables, averages))
    assert all(np.array_equal(v.numpy(), w) for v, w in zip(trainer.model.trainable_variables, weights))
    # Evaluation with the EMA differs from evaluation with the trained weights.
    ema_eval = trainer.evaluate()
    plain_eval = trainer.evaluate(use_ema=False)
    assert ema_eval["ema"] == 1.0 and plain_eval["ema"] == 0.0 and ema_eval["loss"] != plain_eval["loss"]


def test_weight_decay_on_kernels_only():
    import effnet_tf

    model = effnet_tf.build_model(blocks=TINY_BLOCKS.strip("[]").split(","), num_classes=3)
    count = apply_weight_decay(model, 1e-5)
    kernels = kernel_variables(model)
    assert count == len(kernels) > 0
    assert {v.name for v in kernels} <= {"kernel", "depthwise_kernel"}
    decayed = {id(v) for v in model.trainable_weights if v.regularizer is not None}
    assert decayed == {id(v) for v in kernels}  # no BN gamma/beta, no biases
    expected = 1e-5 * sum(float(np.sum(np.square(v.numpy()))) for v in kernels) / 2  # tf.nn.l2_loss
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    # Under N replicas each replica adds 1/N, so the summed gradient applies the decay once.
    # (tests/conftest.py gives this process two logical CPUs when it can.)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    value = tf.constant([[3.0, 4.0]])
    per_replica = strategy.run(lambda: KernelL2(0.1)(value))
    results = [float(v) for v in strategy.experimental_local_results(per_replica)]
    assert results == pytest.approx([0.1 * 25 / 2 / len(devices)] * len(devices))


def test_scheduled_dropout_changes_behaviour_without_retrace():
    import effnet_tf
    from effnet_tf.model.regularization import set_regularization

    model = effnet_tf.build_model(blocks=TINY_BLOCKS.strip("[]").split(","), num_classes=3,
                                  classifier_activation=None, drop_connect_rate=0.0)
    head = model.get_layer("top_dropout")

    @tf.function
    def dropped(x):
        return head(x, training=True)

    x = tf.ones((64, 256))
    zero_fractions = {}
    for rate in (0.0, 0.5, 0.9):
        set_regularization(model, dropout_rate=rate, drop_connect_rate=0.0)
        y = dropped(x).numpy()
        zero_fractions[rate] = float(np.mean(y == 0))
        kept = y[y != 0]
        np.testing.assert_allclose(kept, 1.0 / (1.0 - rate), rtol=1e-5)
    assert zero_fractions[0.0] == 0.0
    assert abs(zero_fractions[0.5] - 0.5) < 0.03 and abs(zero_fractions[0.9] - 0.9) < 0.02
    assert dropped.experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_stage_dropout_reaches_the_model(tmp_path):
    config = tiny_config(tmp_path, "progressive.mode=staged,progressive.num_stages=2,model.dropout_rate=0.6,"
                                   "progressive.min_dropout_rate=0.2,progressive.min_drop_connect_rate=0.0,"
                                   "model.drop_connect_rate=0.3")
    driver = Driver(config)
    trainer = driver.loop
    rates = []

    class Spy(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            from effnet_tf.model.regularization import get_regularization

            rates.append(get_regularization(trainer.model))

    original = trainer.callbacks
    trainer.callbacks = lambda evaluate: original(evaluate) + [Spy()]
    driver.train()
    assert [r["dropout_rate"] for r in rates] == pytest.approx([0.2, 0.6])
    assert [r["drop_connect_rate"] for r in rates] == pytest.approx([0.0, 0.3])
    assert trainer.train_cache.trace_count == 2  # two sizes (32, 64); the rate change cost no trace


@pytest.mark.slow
def test_xla_and_mixed_bfloat16_train_steps(tmp_path):
    # Fused blocks only: XLA on this CPU is slow to compile depthwise convolutions.
    config = tiny_config(tmp_path, "runtime.jit_compile=true,runtime.precision=mixed_bfloat16,train.epochs=1,"
                                   "train.image_size=32,eval.image_size=32,export.enabled=false,"
                                   "model.blocks=[r1_k3_s1_e1_i16_o8_c1,r1_k3_s2_e2_i8_o16_c1]")
    try:
        trainer = Driver(config)
        assert trainer.model.dtype_policy.name == "mixed_bfloat16"
        assert trainer.loop.train_cache.jit_compile is True
        before = [v.numpy().copy() for v in trainer.model.trainable_variables]
        results = trainer.train(evaluate=False)
        after = [v.numpy() for v in trainer.model.trainable_variables]
        assert results["global_step"] == 4
        assert all(np.all(np.isfinite(a)) for a in after)
        assert sum(not np.array_equal(a, b) for a, b in zip(after, before)) > len(before) // 2
        loss = [r for r in read_progress(tmp_path) if r["event"] == "epoch"][0]["loss"]
        assert np.isfinite(loss)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_nan_loss_stops_and_leaves_last_good_checkpoint(tmp_path):
    config = tiny_config(tmp_path, "runtime.checkpoint_every_steps=1,train.epochs=3")
    driver = Driver(config)
    trainer = driver.loop
    original = trainer.train_dataset

    def poisoned(stage, start_epoch):
        # Labels turn NaN from the 7th batch on (global step 7, in the second epoch).
        def fn(ctx):
            from effnet_tf import data

            ds = data.build_dataset(trainer.source, split="train", image_size=stage.image_size,
                                    global_batch_size=16, training=True, input_context=ctx).repeat()
            ds = ds.enumerate().map(lambda i, xy: (xy[0], tf.where(i >= 6, np.nan, xy[1])))
            return ds
        return trainer.strategy.distribute_datasets_from_function(fn)

    trainer.train_dataset = poisoned
    with pytest.raises(NonFiniteLossError, match="global step 7"):
        driver.train()
    assert trainer.checkpoint.latest.endswith("ckpt-6")
    # The last checkpoint holds finite weights and step 6.
    fresh = Driver(tiny_config(tmp_path, "runtime.checkpoint_every_steps=1,train.epochs=3")).loop
    fresh.restore()
    assert fresh.progress.global_step == 6
    assert all(np.all(np.isfinite(v.numpy())) for v in fresh.model.trainable_variables)
    assert original is not None


@pytest.mark.slow
def test_eval_and_export_modes(tmp_path, capsys):
    # Eval and export at 48 px while training at 64: the export's size is the plan's eval size.
    config = tiny_config(tmp_path, "train.epochs=1,train.ema_decay=0.5,export.enabled=true,eval.image_size=48")
    trained = Driver(config).train(evaluate=True)
    from effnet_tf.export.bundle import read_metadata

    metadata = read_metadata(trained["saved_model"])
    assert metadata["image_size"] == 48
    # The export report: every file, checked on the run's validation images, printed.
    assert set(metadata["report"]["files"]) == {"saved_model", "keras", "tflite_float32", "tflite_dynamic_range"}
    assert metadata["report"]["check_images_are"].endswith(" validation images")
    assert "Export report:" in capsys.readouterr().out
    config.runtime.mode = "eval"
    evaluated = Driver(config).run()
    assert evaluated["checkpoint"] == trained["checkpoint"]
    assert evaluated["top1"] == pytest.approx(trained["eval"]["top1"])
    assert evaluated["loss"] == pytest.approx(trained["eval"]["loss"], rel=1e-5)
    # The SavedModel serves the EMA weights' predictions.
    trainer = Driver(config).loop
    trainer.restore()
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    with ema_weights(trainer.model):
        expected = trainer.model(images, training=False).numpy()
    # keep a reference to the loaded object: it owns the variables
    loaded = tf.saved_model.load(os.path.join(trained["saved_model"], "saved_model"))
    served = loaded.signatures["predict_pixels"](pixels=tf.constant(images))
    np.testing.assert_allclose(served["probabilities"].numpy(), tf.nn.softmax(expected).numpy(), rtol=1e-4, atol=1e-5)
    assert os.path.exists(os.path.join(trained["saved_model"], "model.keras"))
    # --mode=export refuses to replace the end-of-training export unless export.overwrite.
    config.runtime.mode = "export"
    with pytest.raises(FileExistsError):
        Driver(config).run()
    config.export.overwrite = True
    assert Driver(config).run() == {"saved_model": trained["saved_model"]}
    empty = tiny_config(tmp_path / "empty")
    empty.runtime.mode = "eval"
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Driver(empty).run()


def test_tpu_strategy_without_tpu_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(TPUUnavailableError) as error:
        create_strategy("tpu")
    message = str(error.value)
    assert "--strategy=tpu" in message and "no --tpu flag and no TPU_NAME" in message and "--tpu=" in message
    with pytest.raises(TPUUnavailableError, match="--tpu='local'.*could not initialise"):
        create_strategy("tpu", tpu="local")
    with pytest.raises(ValueError, match="--strategy=.gpu. is not one of"):
        create_strategy("gpu")
    with pytest.raises(ValueError, match="use --strategy=tpu"):
        create_strategy("default", tpu="my-tpu")


def test_strategy_auto_detection(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert detect_strategy() == "default"
    assert detect_strategy(tpu="my-tpu") == "tpu"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}))
    assert detect_strategy() == "multi_worker"
    monkeypatch.setenv("TPU_NAME", "v3-8")
    assert detect_strategy() == "tpu"
    assert isinstance(create_strategy("default"), tf.distribute.Strategy)
    # Without GPUs, mirrored spans the logical CPUs (two under tests/conftest.py).
    assert create_strategy("mirrored").num_replicas_in_sync == len(tf.config.list_logical_devices("CPU"))


def test_ema_follows_the_warmup_recurrence_under_a_strategy():
    """avg_0 = w_0, then avg_i = d_i avg_{i-1} + (1 - d_i) w_i with d_i = min(decay, (1+i)/(10+i))."""
    from effnet_tf.training.optimizer import EMASGD

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        variable = keras.Variable(np.array([1.0, 2.0], "float32"))
        optimizer = EMASGD(learning_rate=0.1, momentum=0.0, use_ema=True, ema_momentum=0.9, ema_warmup=True)
        optimizer.build([variable])

    @tf.function
    def step(gradient):
        strategy.run(lambda: optimizer.apply_gradients([(tf.identity(gradient), variable)]))

    weights, averages = [], []
    for gradient in ([1.0, 1.0], [0.5, -1.0], [2.0, 0.0], [1.0, 1.0]):
        step(np.array(gradient, "float32"))
        weights.append(variable.numpy().copy())
        averages.append(optimizer._model_variables_moving_average[0].numpy().copy())
    expected = [weights[0]]
    for i in range(1, 4):
        decay = min(0.9, (1 + i) / (10 + i))
        expected.append(decay * expected[-1] + (1 - decay) * weights[i])
    np.testing.assert_allclose(averages, expected, rtol=1e-6)
    # Gradients are summed over replicas (SGD, lr 0.1): the weights moved by 0.1 x replicas x sum(g).
    np.testing.assert_allclose(weights[-1], [1.0, 2.0] - 0.1 * len(devices) * np.array([4.5, 1.0]), rtol=1e-5)


def test_mixed_float16_loss_scaling_traces_once_per_size(tmp_path):
    # A LossScaleOptimizer that built its variables inside the first step would make tf.function
    # trace the step twice; the trainer builds every optimizer variable up front.
    config = tiny_config(tmp_path, "runtime.precision=mixed_float16,train.epochs=2,train.image_size=32,"
                                   "eval.image_size=32,model.blocks=[r1_k3_s1_e1_i16_o8_c1,r1_k3_s2_e2_i8_o16_c1]")
    try:
        trainer = Driver(config)
        assert isinstance(trainer.model.optimizer, keras.optimizers.LossScaleOptimizer)
        results = trainer.train(evaluate=False)
        assert results["global_step"] == 8 and trainer.loop.train_cache.trace_count == 1
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_data_dir_replaces_the_directory_of_folder_and_tfrecord_sources(tmp_path):
    from PIL import Image

    from effnet_tf.data import open_source

    for label in ("cat", "dog"):
        (tmp_path / "images" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "images" / label / "a.png")
    data_config = config_lib.ExperimentConfig().data
    data_config.name = "folder:/placeholder/in/the/yaml"
    data_config.data_dir = str(tmp_path / "images")
    assert open_source(data_config).class_names == ["cat", "dog"]
    data_config.name = "tfrecord:gs://YOUR_BUCKET/imagenet"
    data_config.data_dir = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="missing"):
        open_source(data_config)
