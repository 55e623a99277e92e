"""The experiment configuration's schema: seven typed sections and the closed sets of choices.

Resolution order (later wins): dataclass defaults -> ``--config`` YAML files in order ->
``--params_override`` -> explicit command-line flags (``effnet_tf.config.io``). Fields left
``null`` mean "use the model variant's value" or "decide automatically";
``effnet_tf.config.resolve`` fills them in, and the run writes the resolved config to
``<model_dir>/config.yaml``.

Every field carries ``metadata["help"]`` (and ``"choices"`` where the values are a closed set),
so the documentation tables are generated from these dataclasses. Every enumeration a user can
choose from is defined here once; the components that implement the choices import it.

A resolved config that belongs to a run plan is *frozen* (``freeze``): assigning to it raises,
so nothing downstream can change what was planned. ``copy_config`` gives a mutable copy.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

MODES = ("train", "eval", "train_and_eval", "export")
STRATEGIES = ("auto", "tpu", "mirrored", "multi_worker", "one_device", "default")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
SCHEDULE_MODES = ("none", "staged", "random")
SIZINGS = ("paper", "official")
LR_SCHEDULES = ("exponential", "cosine", "constant")
OPTIMIZERS = ("rmsprop", "sgd", "adam")
#: What a config may name: "auto" is decided from the run's budget (effnet_tf.config.budget).
AUTO = "auto"
LR_SCHEDULE_CHOICES = (AUTO,) + LR_SCHEDULES
OPTIMIZER_CHOICES = (AUTO,) + OPTIMIZERS
EVAL_FREQUENCIES = ("epoch", "stage", "end")
#: RandAugment op semantics (effnet_tf.data.rand_augment.POLICIES).
RANDAUG_POLICIES = ("increasing", "official")
#: What ``export.formats`` may hold (``effnet_tf.export.export_all`` writes these).
EXPORT_FORMATS = ("saved_model", "keras", "tflite", "tflite_int8", "tflite_int16x8", "onnx")
#: What an export writes unless told otherwise (tflite_int8 needs calibration images).
DEFAULT_EXPORT_FORMATS = ("saved_model", "keras", "tflite")


class FrozenConfigError(AttributeError):
    """An assignment to a config that a run plan owns."""


class _Section:
    """Base of the config dataclasses: refuses assignments once frozen."""

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise FrozenConfigError(
                f"Cannot set {type(self).__name__}.{name}: this config belongs to a run plan and is read-only "
                "(it was resolved and validated once). Change a copy (effnet_tf.config.copy_config) and plan again.")
        object.__setattr__(self, name, value)


def _set_frozen(config: "ExperimentConfig", frozen: bool) -> "ExperimentConfig":
    for section in [config] + [getattr(config, name) for name in SECTIONS]:
        object.__setattr__(section, "_frozen", frozen)
    return config


def freeze(config: "ExperimentConfig") -> "ExperimentConfig":
    """Makes ``config`` and its sections read-only (in place); returns it."""
    return _set_frozen(config, True)


def is_frozen(config: "ExperimentConfig") -> bool:
    return bool(config.__dict__.get("_frozen"))


def copy_config(config: "ExperimentConfig") -> "ExperimentConfig":
    """A deep, mutable copy (of a frozen config too)."""
    import copy

    return _set_frozen(copy.deepcopy(config), False)


def _f(default: Any = None, help: str = "", choices: Optional[Sequence[Any]] = None, factory=None):
    """A dataclass field with documentation metadata."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig(_Section):
    name: Optional[str] = _f("efficientnetv2-b0", "Registry name of the variant (effnet_tf.list_models()); "
                             "null with `blocks` for a custom architecture.")
    blocks: Optional[List[str]] = _f(None, "Block strings (one per stage) of a custom architecture; "
                                     "with `name` set they replace the variant's blocks.")
    width: Optional[float] = _f(None, "Width coefficient; null = the variant's (1.0 for custom blocks).")
    depth: Optional[float] = _f(None, "Depth coefficient; null = the variant's (1.0 for custom blocks).")
    num_classes: Optional[int] = _f(None, "Number of classes; null = the data source's.")
    dropout_rate: Optional[float] = _f(None, "Head dropout (the final progressive stage's value); "
                                       "null = the variant's (0.2 for custom blocks) x train.regularization.")
    drop_connect_rate: Optional[float] = _f(None, "Stochastic-depth rate of the last block (final stage's "
                                            "value); null = the variant's (0.2) x train.regularization.")
    sync_batch_norm: bool = _f(False, "Cross-replica (synchronized) BatchNorm under a distribution strategy.")
    gradient_checkpointing: bool = _f(False, "Recompute each block's activations in the backward pass: less "
                                      "memory for big variants/sizes, for about a third more step time.")
    weights: Optional[str] = _f(None, "Initial weights: 'imagenet' (keras.applications, downloaded by Keras), "
                                "a keras.applications .h5/.weights.h5 file, an effnet_tf model to fine-tune "
                                "(its model.keras, export directory or run directory), or null for random init. "
                                "A checkpoint in model_dir always takes precedence.")


@dataclass
class DataConfig(_Section):
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
    flip_probability: Optional[float] = _f(None, "Chance that a training image is mirrored left-right; null = "
                                           "0.5 (the recipe's) x train.regularization. 0 for data whose mirror "
                                           "image means something else (text, digits).")
    randaug_layers: int = _f(2, "RandAugment operations per image.")
    randaug_policy: str = _f("increasing", "RandAugment op semantics: increasing (every op the identity at "
                             "magnitude 0, rising to the official strength at 10; translation and cutout relative "
                             "to the image) or official (the official code's ops: at low magnitudes Posterize, "
                             "Solarize and Brightness destroy the image; what the ImageNet configs use).",
                             RANDAUG_POLICIES)
    crop_area_min: Optional[float] = _f(None, "Lower bound of the random crop's area; null = the variant's "
                                        "(0.05 V2, 0.08 V1) ** train.regularization (1 = no crop).")
    eval_crop_fraction: Optional[float] = _f(None, "Central crop at evaluation and serving, as a fraction of the "
                                             "shorter side (1 = the whole image); null = matched to the training "
                                             "crops: the official size/(size+32) with the variant's crops, 1 "
                                             "without crops.")
    shuffle_buffer: Optional[int] = _f(None, "Shuffle buffer; null = the pipeline's default.")
    cache: bool = _f(False, "Cache decoded examples in memory.")
    skip_corrupt: bool = _f(False, "Skip undecodable images instead of failing.")


@dataclass
class TrainConfig(_Section):
    epochs: int = _f(350, "Total training epochs (all progressive stages together); the auto recipe scales "
                     "its regularization, schedule and EMA with it.")
    global_batch_size: Optional[int] = _f(None, "Global batch size (split evenly over the replicas); null = "
                                          "about 50 steps per epoch, capped per replica by the image size.")
    steps_per_epoch: Optional[int] = _f(None, "Steps per epoch; null = train examples // global batch.")
    image_size: Optional[int] = _f(None, "Training image size (the last progressive stage's); "
                                   "null = the variant's train size (224 for custom blocks).")
    regularization: Optional[float] = _f(None, "Strength of the regularizers left null, 0..1 of the variant's "
                                         "ImageNet recipe (RandAugment, mixup, dropout, stochastic depth "
                                         "linearly; crop area geometrically); null = from train.epochs: 0 at "
                                         "<= 10 epochs, 1 at 350, log scale.")
    randaug_magnitude: Optional[float] = _f(None, "RandAugment magnitude (last stage's); null = the variant's x "
                                            "train.regularization. 0 disables RandAugment.")
    mixup_alpha: Optional[float] = _f(None, "Mixup alpha (last stage's); null = the variant's x "
                                      "train.regularization. 0 disables.")
    cutmix_alpha: float = _f(0.0, "CutMix alpha (last stage's). 0 disables.")
    optimizer: str = _f(AUTO, "Optimizer: rmsprop (the ImageNet recipe), sgd (momentum), adam; auto = adam.",
                        OPTIMIZER_CHOICES)
    base_learning_rate: Optional[float] = _f(None, "Learning rate per 256 images; the peak LR is this x "
                                             "global_batch/256. null = Adam: 1e-3 x sqrt(batch/32) peak (x0.1 "
                                             "from model.weights); RMSProp 0.016; SGD 0.1.")
    lr_schedule: str = _f(AUTO, "Learning-rate decay after warmup; auto = cosine to lr_min_ratio at the last "
                          "step.", LR_SCHEDULE_CHOICES)
    warmup_epochs: Optional[float] = _f(None, "Linear warmup from 0 to the peak LR, in epochs; null = 5% of the "
                                        "run, at most 5 epochs.")
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
    ema_decay: Union[float, str, None] = _f(AUTO, "Exponential moving average of the weights, used for eval "
                                            "and export; null or 0 disables; auto = averaging over the last "
                                            "~10% of the run's steps, 1 - 1/(0.1 x steps) in [0.9, 0.9999].")
    ema_warmup: bool = _f(True, "Use min(ema_decay, (1+step)/(10+step)) as the EMA decay "
                          "(tf.train.ExponentialMovingAverage's num_updates), so short runs get a usable EMA.")
    freeze_backbone_epochs: int = _f(0, "Fine-tuning: epochs at the start that train only the classifier head "
                                     "(the backbone frozen, as Keras' transfer-learning guide does first).")
    trainable_blocks: Optional[int] = _f(None, "Fine-tuning: after the head epochs, how many of the last blocks "
                                         "train (with top_conv and the head); null = the whole network.")
    finetune_lr_scale: float = _f(1.0, "Fine-tuning: the learning rate is multiplied by this once the backbone "
                                  "trains (after train.freeze_backbone_epochs; no effect when that is 0). Keras' "
                                  "guide lowers it 10-100x for ImageNet features after a long head phase.")
    freeze_batchnorm: Optional[bool] = _f(None, "BatchNorm layers do not learn and run in inference mode (their "
                                          "moving statistics normalize; Keras' rule for fine-tuning); null = true "
                                          "when model.weights is set.")
    ema_batchnorm: bool = _f(True, "With ema_decay: also average the BatchNorm moving mean/variance (same decay "
                             "and warm-up), and evaluate/export them with the EMA weights, as the official code.")


@dataclass
class ProgressiveConfig(_Section):
    mode: str = _f("none", "Progressive learning: none (fixed train size), staged (the paper's Algorithm 1), "
                   "random (a size sampled every random_interval_epochs).", SCHEDULE_MODES)
    num_stages: int = _f(4, "staged: number of equal stages.")
    sizing: str = _f("paper", "staged: 'paper' sizes S0+(Se-S0)*i/(N-1); 'official' (the official code) "
                     "S0+(Se-S0)*(i+1)/N.", SIZINGS)
    min_image_size: Optional[int] = _f(None, "First stage's image size; null = the variant's (128).")
    bucket_step: int = _f(32, "Image sizes snap to buckets min_image_size..image_size every bucket_step px; "
                          "each size that a stage uses compiles one train program.")
    random_interval_epochs: int = _f(8, "random: epochs between size samples.")
    min_randaug_magnitude: Optional[float] = _f(None, "First stage's RandAugment magnitude; null = the variant's "
                                                "(5) x train.regularization.")
    min_mixup_alpha: float = _f(0.0, "First stage's mixup alpha.")
    min_cutmix_alpha: float = _f(0.0, "First stage's CutMix alpha.")
    min_dropout_rate: Optional[float] = _f(None, "First stage's head dropout; null = the variant's (0.1) x "
                                           "train.regularization.")
    min_drop_connect_rate: Optional[float] = _f(None, "First stage's stochastic-depth rate; null = the final "
                                                "value (not scheduled, as in the paper).")


@dataclass
class EvalConfig(_Section):
    image_size: Optional[int] = _f(None, "Eval image size; null = the variant's eval size (else the train size).")
    batch_size: Optional[int] = _f(None, "Global eval batch size; null = train.global_batch_size.")
    frequency: str = _f("epoch", "train_and_eval: evaluate after every epoch, every stage, or only at the end.",
                        EVAL_FREQUENCIES)
    every_epochs: Optional[int] = _f(None, "train_and_eval: evaluate after every N epochs and after the last "
                                     "(the same points whatever the schedule, e.g. to compare runs); "
                                     "set, it replaces frequency.")
    steps: Optional[int] = _f(None, "Eval steps; null = the whole split.")
    use_ema: bool = _f(True, "Evaluate with the EMA weights (when train.ema_decay is set).")
    checkpoint: Optional[str] = _f(None, "mode=eval: checkpoint prefix to evaluate; null = latest in model_dir.")
    drop_remainder: Optional[bool] = _f(None, "Drop the last partial eval batch; null = true on TPU "
                                        "(static shapes), false elsewhere.")


@dataclass
class ExportConfig(_Section):
    enabled: bool = _f(True, "Export at the end of training (effnet_tf.export.export_all).")
    dir: Optional[str] = _f(None, "Export directory (saved_model/, model.keras, *.tflite, metadata.json); "
                                  "null = <model_dir>/export.")
    formats: List[str] = _f(help="What to write: any of " + ", ".join(EXPORT_FORMATS) + " (tflite: float32 and "
                            "dynamic-range files; tflite_int8: full-integer, calibrated on the training split; "
                            "tflite_int16x8: int16 activations, for models with SE and SiLU such as V2).",
                            factory=lambda: list(DEFAULT_EXPORT_FORMATS))
    use_ema: bool = _f(True, "Export the EMA weights (when train.ema_decay is set).")
    calibration_examples: int = _f(200, "tflite_int8 and tflite_int16x8: training-split images (eval preprocessing, "
                                   "export size) "
                                   "that calibrate the activation ranges.")
    overwrite: bool = _f(False, "--mode=export: replace an existing export.dir (the end-of-training export "
                                "always replaces its own).")
    report: bool = _f(True, "Run every exported file in its own runtime (TensorFlow, Keras, LiteRT, ONNX Runtime) "
                            "on up to 32 calibration or eval images: size, latency and agreement with the float "
                            "model, printed and stored in metadata.json (report).")


@dataclass
class RuntimeConfig(_Section):
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
class ExperimentConfig(_Section):
    model: ModelConfig = _f(factory=ModelConfig, help="Architecture.")
    data: DataConfig = _f(factory=DataConfig, help="Input pipeline.")
    train: TrainConfig = _f(factory=TrainConfig, help="Recipe.")
    progressive: ProgressiveConfig = _f(factory=ProgressiveConfig, help="Progressive learning.")
    eval: EvalConfig = _f(factory=EvalConfig, help="Evaluation.")
    export: ExportConfig = _f(factory=ExportConfig, help="Export.")
    runtime: RuntimeConfig = _f(factory=RuntimeConfig, help="Where and how it runs.")


# ---------------------------------------------------------------------------------------------
# Introspection

SECTIONS = {
    "model": ModelConfig, "data": DataConfig, "train": TrainConfig, "progressive": ProgressiveConfig,
    "eval": EvalConfig, "export": ExportConfig, "runtime": RuntimeConfig,
}


def config_fields(config_cls=ExperimentConfig, prefix: str = "") -> Iterator[Tuple[str, dataclasses.Field]]:
    """Yields ``(dotted_key, dataclasses.Field)`` for every leaf field (e.g. ``train.epochs``)."""
    for f in dataclasses.fields(config_cls):
        key = f"{prefix}{f.name}"
        if config_cls is ExperimentConfig:
            yield from config_fields(SECTIONS[f.name], key + ".")
        else:
            yield key, f


def field_types() -> Dict[str, Any]:
    """Dotted key -> the annotation (a typing object) of every leaf field."""
    hints = {}
    for section, cls in SECTIONS.items():
        for name, annotation in typing.get_type_hints(cls).items():
            hints[f"{section}.{name}"] = annotation
    return hints


def valid_keys() -> List[str]:
    """All dotted keys, in declaration order."""
    return [key for key, _ in config_fields()]


def get_value(config: ExperimentConfig, key: str) -> Any:
    """The value at a dotted key."""
    section, name = key.split(".", 1)
    return getattr(getattr(config, section), name)
