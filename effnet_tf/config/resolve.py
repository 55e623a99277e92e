"""Nulls and "auto" -> numbers: what a config leaves open is decided from the variant's recipe,
the run's budget (``effnet_tf.config.budget``), the data source and the hardware. Pure (no
TensorFlow), and total: a value out of range is left for ``validate`` to report by its key rather
than failing here with an arithmetic error.
"""

from __future__ import annotations

from typing import List, Optional

from effnet_tf.config import budget
from effnet_tf.config.schema import AUTO, ExperimentConfig, copy_config

# Config key <- field of the variant's recipe (effnet_tf.model.variants.RECIPE_FIELDS), taken as is.
_FROM_RECIPE = {
    ("model", "width"): "width",
    ("model", "depth"): "depth",
    ("train", "image_size"): "train_size",
}
# Regularizers: the variant's value x the regularization strength.
_SCALED_BY_STRENGTH = {
    ("model", "dropout_rate"): "dropout_rate",
    ("model", "drop_connect_rate"): "drop_connect_rate",
    ("train", "randaug_magnitude"): "randaug_magnitude",
    ("train", "mixup_alpha"): "mixup_alpha",
}


def _steps_per_epoch(train_examples: Optional[int], global_batch_size: int, steps_per_loop: int) -> Optional[int]:
    if global_batch_size <= 0 or steps_per_loop <= 0:
        return None  # validate() names the bad key
    steps = max(1, train_examples // global_batch_size)
    # Keras runs whole loops of steps_per_loop steps: round the epoch down to whole loops.
    return max(steps_per_loop, steps // steps_per_loop * steps_per_loop)


def resolve(
    config: ExperimentConfig,
    *,
    on_tpu: bool = False,
    num_classes: Optional[int] = None,
    train_examples: Optional[int] = None,
    num_replicas: int = 1,
    notes: Optional[List[str]] = None,
) -> ExperimentConfig:
    """A (mutable) copy with every null and "auto" that can be decided filled in. (``export.dir``
    stays null for "<model_dir>/export", so a run directory can move: ``Plan.export_dir``.)

    ``num_classes`` and ``train_examples`` come from the data source, ``on_tpu`` and
    ``num_replicas`` from the strategy. ``notes``, when given, receives a few lines that say
    which values the budget rule chose and why. Raises ``ValueError`` when something needed
    cannot be decided (the number of classes, or the steps per epoch of a source of unknown size).
    """
    from effnet_tf.model.variants import get_variant, recipe

    c = copy_config(config)
    m, t, p, e, r, d = c.model, c.train, c.progressive, c.eval, c.runtime, c.data
    if m.name is not None:
        m.name = get_variant(m.name).name  # canonical spelling
    v = recipe(m.name)
    why = _Notes()
    for (section, key), field in _FROM_RECIPE.items():
        if getattr(getattr(c, section), key) is None:
            setattr(getattr(c, section), key, v[field])
    explicit_strength = t.regularization
    if t.regularization is None and isinstance(t.epochs, int) and t.epochs > 0:
        t.regularization = round(budget.regularization_strength(t.epochs), 4)
    strength = t.regularization if isinstance(t.regularization, (int, float)) else 1.0
    for (section, key), field in _SCALED_BY_STRENGTH.items():
        if getattr(getattr(c, section), key) is None:
            setattr(getattr(c, section), key, round(v[field] * strength, 4))
            why.regularizer(f"{section}.{key}", getattr(getattr(c, section), key))
    if d.crop_area_min is None:
        d.crop_area_min = round(budget.scaled_crop_area(v["crop_area_min"], strength), 4)
        why.regularizer("data.crop_area_min", d.crop_area_min)
    if d.flip_probability is None:
        d.flip_probability = round(budget.FLIP_PROBABILITY * strength, 4)
        why.regularizer("data.flip_probability", d.flip_probability)
    if m.num_classes is None:
        m.num_classes = num_classes if num_classes is not None else d.num_classes
    if m.num_classes is None:
        raise ValueError("model.num_classes is null and the data source does not say how many classes it has.")
    if num_classes is not None and m.num_classes != num_classes:
        raise ValueError(
            f"model.num_classes={m.num_classes} but {d.name!r} has {num_classes} classes: the labels would not fit "
            "the classifier. Set model.num_classes to match (or null); a model_dir's config.yaml, read when no "
            "--config is given, pins the value of the run that wrote it.")
    if t.global_batch_size is None:
        t.global_batch_size = budget.auto_batch_size(train_examples or 0, num_replicas, t.image_size, on_tpu)
        why.batch = (f"batch {t.global_batch_size} (" + (f"~{budget.EPOCH_STEPS} steps per epoch of {train_examples:,} "
                     "examples" if train_examples else "size of the data unknown") +
                     f"; at most {budget.per_replica_cap(t.image_size, on_tpu)} per replica at {t.image_size} px)")
    if t.steps_per_epoch is None:
        if not train_examples:
            hint = (" A TFDS dataset that is not prepared in data.data_dir has no split sizes: nothing is "
                    "downloaded at run time, so prepare it first (tfds build NAME --data_dir=DIR)."
                    if d.name.startswith("tfds:") else "")
            raise ValueError(
                f"train.steps_per_epoch is null and the number of examples in {d.name!r} split "
                f"{d.train_split!r} is unknown: set train.steps_per_epoch.{hint}"
            )
        t.steps_per_epoch = _steps_per_epoch(train_examples, t.global_batch_size, r.steps_per_loop)
    _resolve_optimization(c, why)
    if t.freeze_batchnorm is None:
        t.freeze_batchnorm = bool(m.weights)
    if p.min_image_size is None:
        p.min_image_size = min(v["min_train_size"], t.image_size)
    if p.min_randaug_magnitude is None:
        p.min_randaug_magnitude = min(round(v["min_randaug_magnitude"] * strength, 4), t.randaug_magnitude)
    if p.min_dropout_rate is None:
        p.min_dropout_rate = min(round(v["min_dropout_rate"] * strength, 4), m.dropout_rate)
    if p.min_drop_connect_rate is None:
        p.min_drop_connect_rate = m.drop_connect_rate
    if e.image_size is None:
        e.image_size = v["eval_size"] or t.image_size
    if d.eval_crop_fraction is None and isinstance(d.crop_area_min, (int, float)) and 0 < d.crop_area_min <= 1:
        d.eval_crop_fraction = round(budget.eval_crop_fraction(d.crop_area_min, v["crop_area_min"], e.image_size), 4)
        why.regularizer("data.eval_crop_fraction", d.eval_crop_fraction)
    e.batch_size = t.global_batch_size if e.batch_size is None else e.batch_size
    if e.drop_remainder is None:
        e.drop_remainder = bool(on_tpu)
    if r.precision == "auto":
        r.precision = "mixed_bfloat16" if on_tpu else "float32"
    if r.jit_compile == "auto":
        r.jit_compile = bool(on_tpu)
    if notes is not None:
        notes.extend(why.lines(t.epochs, t.regularization, explicit_strength))
    return c


def _resolve_optimization(c: ExperimentConfig, why: "_Notes") -> None:
    """Optimizer, learning rate, schedule, warmup and EMA left to "auto"/null (needs the batch
    and the steps per epoch)."""
    t = c.train
    if t.optimizer == AUTO:
        t.optimizer = "adam"
        why.optimization.append("Adam")
    if t.base_learning_rate is None and isinstance(t.global_batch_size, int) and t.global_batch_size > 0:
        if t.optimizer == "adam":
            # Pretrained weights get the same rate: a lower one is train.finetune_lr_scale after a
            # head-only phase (measured: 10x lower from the start left short fine-tunes at chance).
            peak = budget.auto_peak_learning_rate(t.global_batch_size)
            t.base_learning_rate = round(peak * 256.0 / t.global_batch_size, 8)
            why.optimization.append(f"peak LR {peak:.2g} ({budget.ADAM_PEAK_LR_AT_32:g} x sqrt({t.global_batch_size}/32))")
        else:
            t.base_learning_rate = budget.BASE_LEARNING_RATES.get(t.optimizer)
    if t.lr_schedule == AUTO:
        t.lr_schedule = "cosine"
        why.optimization.append("cosine decay to the last step")
    if t.warmup_epochs is None and isinstance(t.epochs, int):
        t.warmup_epochs = budget.auto_warmup_epochs(t.epochs)
        why.optimization.append(f"warmup {t.warmup_epochs:g} epochs (5%, at most 5)")
    if t.ema_decay == AUTO and isinstance(t.steps_per_epoch, int) and isinstance(t.epochs, int):
        total = t.epochs * t.steps_per_epoch
        t.ema_decay = budget.auto_ema_decay(total)
        why.optimization.append(f"EMA {t.ema_decay:g} (the last ~10% of {total:,} steps)")


class _Notes:
    """What the budget rule chose, collected while resolving, as a few console lines."""

    _NAMES = {"train.randaug_magnitude": "RandAugment {:g}", "train.mixup_alpha": "mixup {:g}",
              "model.dropout_rate": "dropout {:g}", "model.drop_connect_rate": "stochastic depth {:g}",
              "data.crop_area_min": "crop area >= {:g}", "data.eval_crop_fraction": "eval crop {:g}",
              "data.flip_probability": "flip {:g}"}

    def __init__(self):
        self.batch: Optional[str] = None
        self.optimization: List[str] = []
        self.regularizers: List[str] = []

    def regularizer(self, key: str, value) -> None:
        self.regularizers.append(self._NAMES[key].format(value))

    def lines(self, epochs, strength, explicit_strength) -> List[str]:
        lines = []
        first = [self.batch] if self.batch else []
        if first or self.optimization:
            lines.append("Recipe (auto): " + "; ".join(first + [", ".join(self.optimization)] if self.optimization
                                                      else first))
        if self.regularizers and isinstance(strength, (int, float)):
            lines.append("Regularization (auto): " + budget.describe_strength(epochs, strength, explicit_strength)
                         + ": " + ", ".join(self.regularizers))
        return lines
