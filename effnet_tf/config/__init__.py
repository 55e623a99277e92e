"""The experiment configuration: schema, YAML/dict I/O and overrides, validation, resolution.

    from effnet_tf import config
    c = config.load_yaml_files(["configs/demo.yaml"])
    config.apply_override_string(c, "train.epochs=3")
    resolved = config.resolve(c, num_classes=10, train_examples=50_000)
    config.validate(resolved)

A run does both once, in ``effnet_tf.training.plan.make_plan``. Field reference: docs/configs.md.
"""
from effnet_tf.config.io import from_dict, load_yaml_files, save_yaml, to_dict, to_yaml
from effnet_tf.config.overrides import (
    ConfigKeyError,
    apply_override_string,
    apply_overrides,
    closest_keys,
    parse_overrides,
    split_overrides,
)
from effnet_tf.config.resolve import resolve
from effnet_tf.config.schema import (
    EVAL_FREQUENCIES,
    EXPORT_FORMATS,
    LR_SCHEDULES,
    MODES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULE_MODES,
    SECTIONS,
    SIZINGS,
    STRATEGIES,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ExportConfig,
    FrozenConfigError,
    ModelConfig,
    ProgressiveConfig,
    RuntimeConfig,
    TrainConfig,
    config_fields,
    copy_config,
    field_types,
    freeze,
    get_value,
    is_frozen,
    valid_keys,
)
from effnet_tf.config.validate import validate

__all__ = [
    "ConfigKeyError", "DataConfig", "EVAL_FREQUENCIES", "EXPORT_FORMATS", "EvalConfig", "ExperimentConfig",
    "ExportConfig", "FrozenConfigError", "LR_SCHEDULES", "MODES", "ModelConfig", "OPTIMIZERS", "PRECISIONS",
    "ProgressiveConfig", "RuntimeConfig", "SCHEDULE_MODES", "SECTIONS", "SIZINGS", "STRATEGIES", "TrainConfig",
    "apply_override_string", "apply_overrides", "closest_keys", "config_fields", "copy_config", "field_types",
    "freeze", "from_dict", "get_value", "is_frozen", "load_yaml_files", "parse_overrides", "resolve", "save_yaml",
    "split_overrides", "to_dict", "to_yaml", "valid_keys", "validate",
]
