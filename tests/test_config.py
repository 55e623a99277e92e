"""Config parsing: YAML files, dotted overrides and their errors, resolution and validation."""
import glob
import os

import pytest
import yaml

from effnet_tf import config as config_lib
from effnet_tf.config import (
    ConfigKeyError,
    apply_override_string,
    closest_keys,
    parse_overrides,
    split_overrides,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))


def test_every_field_documented():
    keys = config_lib.valid_keys()
    assert len(keys) == len(set(keys)) > 50
    for key, field in config_lib.config_fields():
        assert field.metadata.get("help"), f"{key} has no help text"


def test_split_respects_brackets_and_quotes():
    assert split_overrides("a=1,b=[1,2],c='x,y',d={e: 1, f: 2}") == ["a=1", "b=[1,2]", "c='x,y'", "d={e: 1, f: 2}"]


def test_parse_values_are_yaml_typed():
    pairs = dict(parse_overrides("train.epochs=30,data.name=tfds:cifar10,runtime.tensorboard=false,"
                                 "train.ema_decay=null,model.blocks=[a_b,c_d]"))
    assert pairs == {"train.epochs": 30, "data.name": "tfds:cifar10", "runtime.tensorboard": False,
                     "train.ema_decay": None, "model.blocks": ["a_b", "c_d"]}


def test_overrides_apply_with_conversions():
    config = config_lib.ExperimentConfig()
    apply_override_string(config, "train.epochs=30,data.name=tfds:cifar10,train.weight_decay=1e-5,"
                                  "train.warmup_epochs=2,runtime.jit_compile=true")
    assert config.train.epochs == 30 and config.data.name == "tfds:cifar10"
    # PyYAML reads "1e-5" as a string; a float field still takes it.
    assert config.train.weight_decay == pytest.approx(1e-5) and isinstance(config.train.weight_decay, float)
    assert config.train.warmup_epochs == 2.0 and isinstance(config.train.warmup_epochs, float)
    assert config.runtime.jit_compile is True


def test_list_value_and_comma_string():
    config = config_lib.ExperimentConfig()
    apply_override_string(config, "model.blocks=[r1_k3_s1_e1_i32_o16_c1,r2_k3_s2_e4_i16_o32_c1]")
    assert config.model.blocks == ["r1_k3_s1_e1_i32_o16_c1", "r2_k3_s2_e4_i16_o32_c1"]
    apply_override_string(config, "model.blocks='r1_k3_s1_e1_i32_o16_c1,r2_k3_s2_e4_i16_o32_c1'")
    assert config.model.blocks == ["r1_k3_s1_e1_i32_o16_c1", "r2_k3_s2_e4_i16_o32_c1"]


def test_unknown_key_lists_closest():
    config = config_lib.ExperimentConfig()
    with pytest.raises(ConfigKeyError) as error:
        apply_override_string(config, "train.epoch=3")
    message = str(error.value)
    assert "'train.epoch'" in message and "train.epochs" in message.split("Closest valid keys:")[1]
    with pytest.raises(ValueError, match="eval.image_size|train.image_size"):
        apply_override_string(config, "image_size=3")
    with pytest.raises(ValueError, match="train.epochs"):
        apply_override_string(config, "trian.epochs=3")
    assert closest_keys("progressive.stages")[0] == "progressive.num_stages"


@pytest.mark.parametrize("text, expected", [
    ("train.epochs=abc", "expects int, got 'abc'"),
    ("train.epochs=1.5", "expects int, got 1.5"),
    ("runtime.tensorboard=3", "expects bool, got 3"),
    ("train.weight_decay=fast", "expects float, got 'fast'"),
    ("train.base_learning_rate=fast", "expects float or null, got 'fast'"),
    ("model.blocks=3", "expects list of str or null, got 3"),
    ("train.epochs=null", "expects int, got None"),
])
def test_type_errors_name_key_value_and_type(text, expected):
    config = config_lib.ExperimentConfig()
    with pytest.raises(TypeError) as error:
        apply_override_string(config, text)
    assert text.split("=")[0] in str(error.value) and expected in str(error.value)


def test_choices_checked():
    config = config_lib.ExperimentConfig()
    with pytest.raises(ValueError, match=r"runtime.strategy.*one of \['auto', 'tpu'"):
        apply_override_string(config, "runtime.strategy=gpu")
    with pytest.raises(ValueError, match="progressive.mode"):
        apply_override_string(config, "progressive.mode=sometimes")
    with pytest.raises(ValueError, match="not of the form key=value"):
        apply_override_string(config, "train.epochs")


def test_yaml_files_later_override_earlier(tmp_path):
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    first.write_text("train:\n  epochs: 10\n  global_batch_size: 64\nmodel:\n  name: efficientnetv2-s\n")
    second.write_text("train:\n  epochs: 20\n")
    config = config_lib.load_yaml_files([str(first), str(second)])
    assert config.train.epochs == 20 and config.train.global_batch_size == 64
    assert config.model.name == "efficientnetv2-s"
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epohcs: 3\n")
    with pytest.raises(ConfigKeyError, match=f"from {bad}.*train.epochs"):
        config_lib.load_yaml_files([str(bad)])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        config_lib.load_yaml_files([str(tmp_path / "nope.yaml")])


def test_yaml_round_trip(tmp_path):
    config = config_lib.ExperimentConfig()
    apply_override_string(config, "train.epochs=7,model.blocks=[a_b],progressive.mode=random")
    path = tmp_path / "out" / "config.yaml"
    config_lib.save_yaml(config, str(path))
    assert yaml.safe_load(path.read_text())["train"]["epochs"] == 7
    assert config_lib.load_yaml_files([str(path)]) == config


def test_resolve_fills_variant_figures():
    config = config_lib.ExperimentConfig()
    apply_override_string(config, "model.name=efficientnetv2-s,train.global_batch_size=4096,progressive.mode=staged")
    resolved = config_lib.resolve(config, on_tpu=True, num_classes=1000, train_examples=1_281_167)
    # Figures of EfficientNetV2-S (the official effnetv2_configs.py / the V2 paper): train 300, eval 384, dropout 0.2, RandAugment 10.
    assert resolved.train.image_size == 300 and resolved.eval.image_size == 384
    assert resolved.model.dropout_rate == 0.2 and resolved.train.randaug_magnitude == 10
    assert resolved.progressive.min_image_size == 128 and resolved.progressive.min_dropout_rate == 0.1
    assert resolved.progressive.min_randaug_magnitude == 5
    assert resolved.train.steps_per_epoch == 1_281_167 // 4096 == 312
    assert resolved.runtime.precision == "mixed_bfloat16" and resolved.runtime.jit_compile is True
    assert resolved.eval.drop_remainder is True and resolved.data.crop_area_min == 0.05
    assert config.train.image_size is None  # resolve returns a copy
    cpu = config_lib.resolve(config, on_tpu=False, num_classes=10, train_examples=10_000)
    assert cpu.runtime.precision == "float32" and cpu.runtime.jit_compile is False
    v1 = config_lib.ExperimentConfig()
    apply_override_string(v1, "model.name=EfficientNetB3")
    v1 = config_lib.resolve(v1, num_classes=10, train_examples=1000)
    assert v1.model.name == "efficientnet-b3" and v1.train.image_size == 300 and v1.data.crop_area_min == 0.08


def test_resolve_rounds_epoch_to_whole_loops_and_needs_sizes():
    config = config_lib.ExperimentConfig()
    apply_override_string(config, "train.global_batch_size=100,runtime.steps_per_loop=4")
    assert config_lib.resolve(config, num_classes=10, train_examples=1050).train.steps_per_epoch == 8
    with pytest.raises(ValueError, match="train.steps_per_epoch"):
        config_lib.resolve(config, num_classes=10, train_examples=None)


def test_validate_errors():
    config = config_lib.ExperimentConfig()
    apply_override_string(config, "train.global_batch_size=30,progressive.mode=staged,progressive.num_stages=5,"
                                  "train.epochs=4,model.dropout_rate=1.5,runtime.steps_per_loop=3,"
                                  "train.steps_per_epoch=10")
    with pytest.raises(ValueError) as error:
        config_lib.validate(config, num_replicas=4)
    message = str(error.value)
    for needle in ("global_batch_size=30 must be divisible by the 4 replicas", "num_stages=5 must not exceed",
                   "model.dropout_rate=1.5", "steps_per_loop=3 must divide train.steps_per_epoch=10"):
        assert needle in message


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_shipped_configs_load_resolve_and_validate(path):
    config = config_lib.load_yaml_files([path])
    on_tpu = config.runtime.strategy == "tpu"
    resolved = config_lib.resolve(config, on_tpu=on_tpu, num_classes=config.data.num_classes or 10,
                                  train_examples=config.data.train_examples or 1_281_167)
    config_lib.validate(resolved, num_replicas=8 if on_tpu else 1)


def test_imagenet_configs_carry_the_official_recipe():
    by_name = {os.path.basename(p): config_lib.load_yaml_files([p]) for p in CONFIGS}
    for name in ("imagenet_efficientnetv2_s.yaml", "imagenet_efficientnetv2_m.yaml",
                 "imagenet_efficientnetv2_l.yaml", "imagenet_efficientnet_b0.yaml"):
        c = by_name[name]
        assert (c.train.optimizer, c.train.rmsprop_rho, c.train.momentum, c.train.epsilon) == ("rmsprop", 0.9, 0.9, 1e-3)
        assert (c.train.base_learning_rate, c.train.lr_decay_rate, c.train.lr_decay_epochs) == (0.016, 0.97, 2.4)
        assert (c.train.weight_decay, c.train.label_smoothing, c.train.ema_decay) == (1e-5, 0.1, 0.9999)
        assert c.train.epochs == 350 and c.runtime.strategy == "tpu" and c.runtime.precision == "mixed_bfloat16"
    for name, size in (("s", 300), ("m", 384), ("l", 384)):
        c = by_name[f"imagenet_efficientnetv2_{name}.yaml"]
        assert c.model.name == f"efficientnetv2-{name}" and c.train.global_batch_size == 4096
        assert c.progressive.mode == "staged" and c.progressive.num_stages == 4 and c.train.image_size == size
    assert "demo.yaml" in by_name and by_name["demo.yaml"].data.name == "synthetic"
    flowers = by_name["finetune_flowers102.yaml"]
    assert flowers.model.weights == "imagenet" and flowers.data.name == "tfds:oxford_flowers102"
