"""The experiment configuration: typed dataclasses, loaded from YAML files and dotted overrides.

Resolution order (later wins): dataclass defaults -> ``--config`` YAML files in order ->
``--params_override`` -> explicit command-line flags. Fields left ``null`` mean "use the model
variant's value" (see ``effnet_tf.get_variant``) or "decide automatically"; the trainer fills
them in (``resolve``) and writes the fully resolved config to ``model_dir/config.yaml``.

Every field carries ``metadata["help"]`` (and ``"choices"`` where the values are a closed set)
so documentation tables can be generated from the dataclasses (``config_fields``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import yaml

MODES = ("train", "eval", "train_and_eval", "export")
STRATEGIES = ("auto", "tpu", "mirrored", "multi_worker", "one_device", "default")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
SCHEDULE_MODES = ("none", "staged", "random")
SIZINGS = ("paper", "official")
LR_SCHEDULES = ("exponential", "cosine", "constant")
OPTIMIZERS = ("rmsprop", "sgd", "adam")
EVAL_FREQUENCIES = ("epoch", "stage", "end")


def _f(default: Any = None, help: str = "", choices: Optional[Sequence[Any]] = None, factory=None):
    """A dataclass field with documentation metadata."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    name: Optional[str] = _f("efficientnetv2-b0", "Registry name of the variant (effnet_tf.list_models()); "
                             "null with `blocks` for a custom architecture.")
    blocks: Optional[List[str]] = _f(None, "Block strings (one per stage) of a custom architecture; "
                                     "with `name` set they replace the variant's blocks.")
    width: Optional[float] = _f(None, "Width coefficient; null = the variant's (1.0 for custom blocks).")
    depth: Optional[float] = _f(None, "Depth coefficient; null = the variant's (1.0 for custom blocks).")
    num_classes: Optional[int] = _f(None, "Number of classes; null = the data source's.")
    dropout_rate: Optional[float] = _f(None, "Head dropout (the final progressive stage's value); "
                                       "null = the variant's (0.2 for custom blocks).")
    drop_connect_rate: Optional[float] = _f(None, "Stochastic-depth rate of the last block (final stage's "
                                            "value); null = the variant's (0.2).")
    sync_batch_norm: bool = _f(False, "Cross-replica (synchronized) BatchNorm under a distribution strategy.")
    weights: Optional[str] = _f(None, "Initial weights: 'imagenet' (keras.applications, downloaded by Keras), "
                                "a keras.applications .h5/.weights.h5 file, or null for random init. "
                                "A checkpoint in model_dir always takes precedence.")


@dataclass
class DataConfig:
    name: str = _f("synthetic", "Data source: 'synthetic', 'tfds:<name>', 'tfrecord:<dir>' or 'folder:<dir>'.")
    data_dir: Optional[str] = _f(None, "Data directory, local or gs://: TFDS' data_dir for tfds: "
                                     "sources; replaces the directory of tfrecord:/folder: sources.")
    train_split: str = _f("train", "Split used for training.")
    eval_split: str = _f("validation", "Split used for evaluation.")
    num_classes: Optional[int] = _f(None, "Classes of the synthetic source (or of tfrecord shards).")
    train_examples: Optional[int] = _f(None, "Training examples of the synthetic source.")
    eval_examples: Optional[int] = _f(None, "Validation examples of the synthetic source.")
    train_pattern: Optional[str] = _f(None, "tfrecord: glob of the training shards (e.g. 'train-*').")
    eval_pattern: Optional[str] = _f(None, "tfrecord: glob of the validation shards (e.g. 'validation-*').")
    label_offset: Optional[int] = _f(None, "tfrecord: subtracted from stored labels (1 for ImageNet).")
    randaug_layers: int = _f(2, "RandAugment operations per image.")
    crop_area_min: Optional[float] = _f(None, "Lower bound of the random crop's area; null = the variant's "
                                        "(0.05 V2, 0.08 V1).")
    shuffle_buffer: Optional[int] = _f(None, "Shuffle buffer; null = the pipeline's default.")
    cache: bool = _f(False, "Cache decoded examples in memory.")
    skip_corrupt: bool = _f(False, "Skip undecodable images instead of failing.")


@dataclass
class TrainConfig:
    epochs: int = _f(350, "Total training epochs (all progressive stages together).")
    global_batch_size: int = _f(4096, "Global batch size (split evenly over the replicas).")
    steps_per_epoch: Optional[int] = _f(None, "Steps per epoch; null = train examples // global batch.")
    image_size: Optional[int] = _f(None, "Training image size (the last progressive stage's); "
                                   "null = the variant's train size (224 for custom blocks).")
    randaug_magnitude: Optional[float] = _f(None, "RandAugment magnitude (last stage's); null = the variant's. "
                                            "0 disables RandAugment.")
    mixup_alpha: Optional[float] = _f(None, "Mixup alpha (last stage's); null = the variant's. 0 disables.")
    cutmix_alpha: float = _f(0.0, "CutMix alpha (last stage's). 0 disables.")
    optimizer: str = _f("rmsprop", "Optimizer: rmsprop (the recipe), sgd (momentum) or adam (short "
                        "from-scratch runs such as the demo).", OPTIMIZERS)
    base_learning_rate: float = _f(0.016, "Learning rate per 256 images; the peak LR is this x global_batch/256.")
    lr_schedule: str = _f("exponential", "Learning-rate decay after warmup.", LR_SCHEDULES)
    warmup_epochs: float = _f(5.0, "Linear warmup from 0 to the peak LR, in epochs.")
    lr_decay_rate: float = _f(0.97, "exponential: factor applied every lr_decay_epochs (staircase).")
    lr_decay_epochs: float = _f(2.4, "exponential: epochs between decays.")
    lr_min_ratio: float = _f(0.0, "cosine: final LR as a fraction of the peak.")
    rmsprop_rho: float = _f(0.9, "RMSProp decay of the squared-gradient average.")
    momentum: float = _f(0.9, "RMSProp/SGD momentum.")
    epsilon: float = _f(0.001, "RMSProp epsilon.")
    rmsprop_initial_rms: float = _f(1.0, "Initial value of RMSProp's mean-square accumulator: 1 as TF1's "
                                    "RMSPropOptimizer in the official code (small first updates); 0 as Keras.")
    weight_decay: float = _f(1e-5, "L2 weight decay on conv/dense kernels only: adds "
                             "weight_decay * sum(w^2) / 2 (tf.nn.l2_loss, as the official code).")
    label_smoothing: float = _f(0.1, "Label smoothing of the cross-entropy.")
    ema_decay: Optional[float] = _f(0.9999, "Exponential moving average of the weights, used for eval and "
                                    "export; null or 0 disables.")
    ema_warmup: bool = _f(True, "Use min(ema_decay, (1+step)/(10+step)) as the EMA decay "
                          "(tf.train.ExponentialMovingAverage's num_updates), so short runs get a usable EMA.")


@dataclass
class ProgressiveConfig:
    mode: str = _f("none", "Progressive learning: none (fixed train size), staged (the paper's Algorithm 1), "
                   "random (a size sampled every random_interval_epochs).", SCHEDULE_MODES)
    num_stages: int = _f(4, "staged: number of equal stages.")
    sizing: str = _f("paper", "staged: 'paper' sizes S0+(Se-S0)*i/(N-1); 'official' (the official code) "
                     "S0+(Se-S0)*(i+1)/N.", SIZINGS)
    min_image_size: Optional[int] = _f(None, "First stage's image size; null = the variant's (128).")
    bucket_step: int = _f(32, "Image sizes snap to buckets min_image_size..image_size every bucket_step px; "
                          "each size that a stage uses compiles one train program.")
    random_interval_epochs: int = _f(8, "random: epochs between size samples.")
    min_randaug_magnitude: Optional[float] = _f(None, "First stage's RandAugment magnitude; null = the variant's (5).")
    min_mixup_alpha: float = _f(0.0, "First stage's mixup alpha.")
    min_cutmix_alpha: float = _f(0.0, "First stage's CutMix alpha.")
    min_dropout_rate: Optional[float] = _f(None, "First stage's head dropout; null = the variant's (0.1).")
    min_drop_connect_rate: Optional[float] = _f(None, "First stage's stochastic-depth rate; null = the final "
                                                "value (not scheduled, as in the paper).")


@dataclass
class EvalConfig:
    image_size: Optional[int] = _f(None, "Eval image size; null = the variant's eval size (else the train size).")
    batch_size: Optional[int] = _f(None, "Global eval batch size; null = train.global_batch_size.")
    frequency: str = _f("epoch", "train_and_eval: evaluate after every epoch, every stage, or only at the end.",
                        EVAL_FREQUENCIES)
    steps: Optional[int] = _f(None, "Eval steps; null = the whole split.")
    use_ema: bool = _f(True, "Evaluate with the EMA weights (when train.ema_decay is set).")
    checkpoint: Optional[str] = _f(None, "mode=eval: checkpoint prefix to evaluate; null = latest in model_dir.")
    drop_remainder: Optional[bool] = _f(None, "Drop the last partial eval batch; null = true on TPU "
                                        "(static shapes), false elsewhere.")


@dataclass
class ExportConfig:
    enabled: bool = _f(True, "Export at the end of training (effnet_tf.export.export_all).")
    dir: Optional[str] = _f(None, "Export directory (saved_model/, model.keras, *.tflite, metadata.json); "
                                  "null = <model_dir>/export.")
    formats: List[str] = _f(help="What to write: any of saved_model, keras, tflite.",
                            factory=lambda: ["saved_model", "keras", "tflite"])
    use_ema: bool = _f(True, "Export the EMA weights (when train.ema_decay is set).")
    overwrite: bool = _f(False, "--mode=export: replace an existing export.dir (the end-of-training export "
                                "always replaces its own).")


@dataclass
class RuntimeConfig:
    mode: str = _f("train_and_eval", "What to run.", MODES)
    model_dir: Optional[str] = _f(None, "Checkpoints, TensorBoard logs, config and export (local or gs://).")
    strategy: str = _f("auto", "tf.distribute strategy; auto = TPU if one is named/found, MultiWorkerMirrored "
                       "with a TF_CONFIG cluster, Mirrored with several GPUs, else default.", STRATEGIES)
    tpu: Optional[str] = _f(None, "TPU name, 'local' (TPU VM) or grpc://host:port.")
    precision: str = _f("auto", "Keras dtype policy; auto = mixed_bfloat16 on TPU, float32 elsewhere.", PRECISIONS)
    jit_compile: Union[bool, str] = _f("auto", "XLA-compile the train step (true/false/auto: auto = true on TPU, "
                                       "where XLA is implicit, false elsewhere).", ("auto", True, False))
    steps_per_loop: int = _f(1, "Train steps per host call (Keras steps_per_execution); must divide steps_per_epoch.")
    seed: int = _f(0, "Seed of the progressive schedule, data order and model initialisation.")
    checkpoint_every_steps: int = _f(0, "Also checkpoint every this many steps (0 = at epoch ends only).")
    keep_checkpoints: int = _f(3, "Checkpoints kept in model_dir.")
    verbose: int = _f(1, "Keras verbosity: 1 progress bar, 2 one line per epoch, 0 silent.", (0, 1, 2))
    tensorboard: bool = _f(True, "Write TensorBoard logs to <model_dir>/logs.")


@dataclass
class ExperimentConfig:
    model: ModelConfig = _f(factory=ModelConfig, help="Architecture.")
    data: DataConfig = _f(factory=DataConfig, help="Input pipeline.")
    train: TrainConfig = _f(factory=TrainConfig, help="Recipe.")
    progressive: ProgressiveConfig = _f(factory=ProgressiveConfig, help="Progressive learning.")
    eval: EvalConfig = _f(factory=EvalConfig, help="Evaluation.")
    export: ExportConfig = _f(factory=ExportConfig, help="Export.")
    runtime: RuntimeConfig = _f(factory=RuntimeConfig, help="Where and how it runs.")


# ---------------------------------------------------------------------------------------------
# Introspection


def config_fields(config_cls=ExperimentConfig, prefix: str = "") -> Iterator[Tuple[str, dataclasses.Field]]:
    """Yields ``(dotted_key, dataclasses.Field)`` for every leaf field (e.g. ``train.epochs``)."""
    for f in dataclasses.fields(config_cls):
        key = f"{prefix}{f.name}"
        if config_cls is ExperimentConfig:
            yield from config_fields(_SECTIONS[f.name], key + ".")
        else:
            yield key, f


_SECTIONS = {
    "model": ModelConfig, "data": DataConfig, "train": TrainConfig, "progressive": ProgressiveConfig,
    "eval": EvalConfig, "export": ExportConfig, "runtime": RuntimeConfig,
}


def field_types() -> Dict[str, Any]:
    """Dotted key -> the annotation (a typing object) of every leaf field."""
    import typing

    hints = {}
    for section, cls in _SECTIONS.items():
        for name, annotation in typing.get_type_hints(cls).items():
            hints[f"{section}.{name}"] = annotation
    return hints


def valid_keys() -> List[str]:
    """All dotted keys, in declaration order."""
    return [key for key, _ in config_fields()]


# ---------------------------------------------------------------------------------------------
# Dict / YAML round trip


def to_dict(config: ExperimentConfig) -> Dict[str, Any]:
    """Plain nested dict (YAML-ready) of a config."""
    return dataclasses.asdict(config)


def to_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)


def from_dict(values: Dict[str, Any], base: Optional[ExperimentConfig] = None, source: str = "dict") -> ExperimentConfig:
    """A copy of ``base`` (default: the defaults) with the nested ``values`` applied, type-checked."""
    from effnet_tf.training.overrides import apply_overrides, flatten

    config = copy_config(base) if base is not None else ExperimentConfig()
    return apply_overrides(config, flatten(values, source=source), source=source)


def copy_config(config: ExperimentConfig) -> ExperimentConfig:
    """A deep copy (sections are mutable dataclasses)."""
    import copy

    return copy.deepcopy(config)


def load_yaml_files(paths: Sequence[str], base: Optional[ExperimentConfig] = None) -> ExperimentConfig:
    """Applies the YAML files in order (later files override earlier ones) over ``base``."""
    import tensorflow as tf

    config = copy_config(base) if base is not None else ExperimentConfig()
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"Config file {path!r} does not exist.")
        with tf.io.gfile.GFile(path, "r") as handle:
            try:
                values = yaml.safe_load(handle.read())
            except yaml.YAMLError as error:
                raise ValueError(f"Config file {path!r} is not valid YAML: {error}") from error
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"Config file {path!r} must hold a mapping of sections, got {type(values).__name__}.")
        config = from_dict(values, base=config, source=path)
    return config


def save_yaml(config: ExperimentConfig, path: str) -> None:
    """Writes the config as YAML (local or gs:// path), creating the directory."""
    import tensorflow as tf

    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(to_yaml(config))


# ---------------------------------------------------------------------------------------------
# Validation


def validate(config: ExperimentConfig, num_replicas: Optional[int] = None) -> ExperimentConfig:
    """Checks values that types alone cannot; raises ``ValueError`` naming the key and the allowed range."""
    errors = []

    def need(condition: bool, message: str) -> None:
        if not condition:
            errors.append(message)

    for key, f in config_fields():
        choices = f.metadata.get("choices")
        value = get_value(config, key)
        if choices is not None and value not in choices:
            errors.append(f"{key}={value!r} is not one of {list(choices)}.")

    m, t, p, e, r, d = config.model, config.train, config.progressive, config.eval, config.runtime, config.data
    need(m.name is not None or m.blocks, "model.name or model.blocks must be set.")
    export_formats = ("saved_model", "keras", "tflite")
    need(bool(config.export.formats) and set(config.export.formats) <= set(export_formats),
         f"export.formats={config.export.formats!r} must be a non-empty list of {list(export_formats)}.")
    if m.blocks is not None:
        need(len(m.blocks) > 0, "model.blocks must not be empty.")
    for key in ("model.width", "model.depth"):
        value = get_value(config, key)
        need(value is None or value > 0, f"{key}={value!r} must be > 0.")
    for key in ("model.dropout_rate", "model.drop_connect_rate", "progressive.min_dropout_rate",
                "progressive.min_drop_connect_rate"):
        value = get_value(config, key)
        need(value is None or 0.0 <= value < 1.0, f"{key}={value!r} must be in [0, 1).")
    for key in ("model.num_classes", "data.num_classes", "data.train_examples", "data.eval_examples",
                "train.steps_per_epoch", "train.image_size", "progressive.min_image_size",
                "eval.image_size", "eval.batch_size", "eval.steps", "data.shuffle_buffer"):
        value = get_value(config, key)
        need(value is None or value > 0, f"{key}={value!r} must be > 0.")
    need(t.epochs > 0, f"train.epochs={t.epochs!r} must be > 0.")
    need(t.global_batch_size > 0, f"train.global_batch_size={t.global_batch_size!r} must be > 0.")
    if num_replicas:
        need(t.global_batch_size % num_replicas == 0,
             f"train.global_batch_size={t.global_batch_size} must be divisible by the {num_replicas} replicas.")
        if e.batch_size is not None:
            need(e.batch_size % num_replicas == 0,
                 f"eval.batch_size={e.batch_size} must be divisible by the {num_replicas} replicas.")
    need(t.base_learning_rate > 0, f"train.base_learning_rate={t.base_learning_rate!r} must be > 0.")
    need(t.warmup_epochs >= 0, f"train.warmup_epochs={t.warmup_epochs!r} must be >= 0.")
    need(0 < t.lr_decay_rate <= 1, f"train.lr_decay_rate={t.lr_decay_rate!r} must be in (0, 1].")
    need(t.lr_decay_epochs > 0, f"train.lr_decay_epochs={t.lr_decay_epochs!r} must be > 0.")
    need(0 <= t.lr_min_ratio <= 1, f"train.lr_min_ratio={t.lr_min_ratio!r} must be in [0, 1].")
    need(t.rmsprop_initial_rms >= 0, f"train.rmsprop_initial_rms={t.rmsprop_initial_rms!r} must be >= 0.")
    need(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay!r} must be >= 0.")
    need(0 <= t.label_smoothing < 1, f"train.label_smoothing={t.label_smoothing!r} must be in [0, 1).")
    need(t.ema_decay is None or 0 <= t.ema_decay < 1, f"train.ema_decay={t.ema_decay!r} must be in [0, 1).")
    for key in ("train.randaug_magnitude", "train.mixup_alpha", "train.cutmix_alpha",
                "progressive.min_randaug_magnitude", "progressive.min_mixup_alpha", "progressive.min_cutmix_alpha"):
        value = get_value(config, key)
        need(value is None or value >= 0, f"{key}={value!r} must be >= 0.")
    need(d.randaug_layers >= 0, f"data.randaug_layers={d.randaug_layers!r} must be >= 0.")
    need(d.crop_area_min is None or 0 < d.crop_area_min <= 1, f"data.crop_area_min={d.crop_area_min!r} must be in (0, 1].")
    need(p.num_stages >= 1, f"progressive.num_stages={p.num_stages!r} must be >= 1.")
    need(p.mode != "staged" or p.num_stages <= t.epochs,
         f"progressive.num_stages={p.num_stages} must not exceed train.epochs={t.epochs}.")
    need(p.bucket_step > 0, f"progressive.bucket_step={p.bucket_step!r} must be > 0.")
    need(p.random_interval_epochs > 0, f"progressive.random_interval_epochs={p.random_interval_epochs!r} must be > 0.")
    if p.min_image_size is not None and t.image_size is not None:
        need(p.min_image_size <= t.image_size,
             f"progressive.min_image_size={p.min_image_size} must not exceed train.image_size={t.image_size}.")
    need(r.steps_per_loop >= 1, f"runtime.steps_per_loop={r.steps_per_loop!r} must be >= 1.")
    if t.steps_per_epoch is not None:
        need(t.steps_per_epoch % r.steps_per_loop == 0,
             f"runtime.steps_per_loop={r.steps_per_loop} must divide train.steps_per_epoch={t.steps_per_epoch} "
             "(Keras runs whole loops, so an epoch would overrun).")
    need(r.checkpoint_every_steps >= 0, f"runtime.checkpoint_every_steps={r.checkpoint_every_steps!r} must be >= 0.")
    need(r.keep_checkpoints >= 1, f"runtime.keep_checkpoints={r.keep_checkpoints!r} must be >= 1.")
    if errors:
        raise ValueError("Invalid configuration:\n  " + "\n  ".join(errors))
    return config


def get_value(config: ExperimentConfig, key: str) -> Any:
    """The value at a dotted key."""
    section, name = key.split(".", 1)
    return getattr(getattr(config, section), name)


# ---------------------------------------------------------------------------------------------
# Resolution of nulls

# Defaults for custom block strings (no registered variant): V2-B0's recipe at 224 px.
_CUSTOM_DEFAULTS = dict(
    width=1.0, depth=1.0, train_size=224, eval_size=None, dropout_rate=0.2, drop_connect_rate=0.2,
    randaug_magnitude=10.0, mixup_alpha=0.0, min_train_size=128, min_randaug_magnitude=5.0,
    min_dropout_rate=0.1, crop_area_min=0.05,
)


def variant_defaults(config: ExperimentConfig) -> Dict[str, Any]:
    """The variant's recipe figures (or the custom-block defaults) that null fields fall back to."""
    values = dict(_CUSTOM_DEFAULTS)
    if config.model.name is not None:
        from effnet_tf.model.variants import get_variant

        spec = get_variant(config.model.name)
        values.update(
            width=spec.width, depth=spec.depth, train_size=spec.train_size, eval_size=spec.eval_size,
            dropout_rate=spec.dropout_rate, drop_connect_rate=spec.drop_connect_rate,
            randaug_magnitude=spec.randaug_magnitude, mixup_alpha=spec.mixup_alpha,
            min_train_size=spec.min_train_size, min_randaug_magnitude=spec.min_randaug_magnitude,
            min_dropout_rate=spec.min_dropout_rate, crop_area_min=spec.crop_area_min,
        )
    return values


def resolve(
    config: ExperimentConfig,
    *,
    on_tpu: bool = False,
    num_classes: Optional[int] = None,
    train_examples: Optional[int] = None,
) -> ExperimentConfig:
    """A copy with every null that can be decided filled in (variant figures, data sizes, auto modes).

    ``num_classes`` and ``train_examples`` come from the data source. Raises ``ValueError`` when
    something needed cannot be decided (e.g. steps per epoch of a source of unknown size).
    """
    c = copy_config(config)
    v = variant_defaults(c)
    m, t, p, e, r, d = c.model, c.train, c.progressive, c.eval, c.runtime, c.data
    if m.name is not None:
        from effnet_tf.model.variants import get_variant

        m.name = get_variant(m.name).name  # canonical spelling
    m.width = v["width"] if m.width is None else m.width
    m.depth = v["depth"] if m.depth is None else m.depth
    m.dropout_rate = v["dropout_rate"] if m.dropout_rate is None else m.dropout_rate
    m.drop_connect_rate = v["drop_connect_rate"] if m.drop_connect_rate is None else m.drop_connect_rate
    if m.num_classes is None:
        m.num_classes = num_classes if num_classes is not None else d.num_classes
    if m.num_classes is None:
        raise ValueError("model.num_classes is null and the data source does not say how many classes it has.")
    t.image_size = v["train_size"] if t.image_size is None else t.image_size
    t.randaug_magnitude = v["randaug_magnitude"] if t.randaug_magnitude is None else t.randaug_magnitude
    t.mixup_alpha = v["mixup_alpha"] if t.mixup_alpha is None else t.mixup_alpha
    if t.steps_per_epoch is None:
        if not train_examples:
            raise ValueError(
                f"train.steps_per_epoch is null and the number of examples in {d.name!r} split "
                f"{d.train_split!r} is unknown: set train.steps_per_epoch."
            )
        t.steps_per_epoch = max(1, train_examples // t.global_batch_size)
        # Keras runs whole loops of steps_per_loop steps: round the epoch down to whole loops.
        t.steps_per_epoch = max(r.steps_per_loop, t.steps_per_epoch // r.steps_per_loop * r.steps_per_loop)
    if p.min_image_size is None:
        p.min_image_size = min(v["min_train_size"], t.image_size)
    if p.min_randaug_magnitude is None:
        p.min_randaug_magnitude = min(v["min_randaug_magnitude"], t.randaug_magnitude)
    if p.min_dropout_rate is None:
        p.min_dropout_rate = min(v["min_dropout_rate"], m.dropout_rate)
    if p.min_drop_connect_rate is None:
        p.min_drop_connect_rate = m.drop_connect_rate
    d.crop_area_min = v["crop_area_min"] if d.crop_area_min is None else d.crop_area_min
    if e.image_size is None:
        e.image_size = v["eval_size"] or t.image_size
    e.batch_size = t.global_batch_size if e.batch_size is None else e.batch_size
    if e.drop_remainder is None:
        e.drop_remainder = bool(on_tpu)
    if r.precision == "auto":
        r.precision = "mixed_bfloat16" if on_tpu else "float32"
    if r.jit_compile == "auto":
        r.jit_compile = bool(on_tpu)
    if c.export.dir is None and r.model_dir:
        c.export.dir = r.model_dir.rstrip("/") + "/export"
    return c


def model_build_kwargs(model_config: "ModelConfig") -> Dict[str, Any]:
    """``effnet_tf.build_model`` arguments of a resolved model config: a logits head (the loss
    applies softmax) and input normalization inside the model. One place for the trainer and
    for rebuilding a model from a model_dir."""
    m = model_config
    return dict(
        name=m.name, num_classes=m.num_classes, blocks=m.blocks, width=m.width, depth=m.depth,
        dropout_rate=m.dropout_rate, drop_connect_rate=m.drop_connect_rate,
        classifier_activation=None, include_preprocessing=True,
    )
