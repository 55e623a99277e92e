"""Nulls -> numbers: what a config leaves open is decided from the variant's recipe, the data
source and the hardware. Pure (no TensorFlow), and total: a value out of range is left for
``validate`` to report by its key rather than failing here with an arithmetic error.
"""

from __future__ import annotations

from typing import Optional

from effnet_tf.config.schema import ExperimentConfig, copy_config

# Config key <- field of the variant's recipe (effnet_tf.model.variants.RECIPE_FIELDS).
_FROM_RECIPE = {
    ("model", "width"): "width",
    ("model", "depth"): "depth",
    ("model", "dropout_rate"): "dropout_rate",
    ("model", "drop_connect_rate"): "drop_connect_rate",
    ("train", "image_size"): "train_size",
    ("train", "randaug_magnitude"): "randaug_magnitude",
    ("train", "mixup_alpha"): "mixup_alpha",
    ("data", "crop_area_min"): "crop_area_min",
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
) -> ExperimentConfig:
    """A (mutable) copy with every null that can be decided filled in. (``export.dir`` stays
    null for "<model_dir>/export", so a run directory can move: ``Plan.export_dir``.)

    ``num_classes`` and ``train_examples`` come from the data source, ``on_tpu`` from the
    strategy. Raises ``ValueError`` when something needed cannot be decided (the number of
    classes, or the steps per epoch of a source of unknown size).
    """
    from effnet_tf.model.variants import get_variant, recipe

    c = copy_config(config)
    m, t, p, e, r, d = c.model, c.train, c.progressive, c.eval, c.runtime, c.data
    if m.name is not None:
        m.name = get_variant(m.name).name  # canonical spelling
    v = recipe(m.name)
    for (section, key), field in _FROM_RECIPE.items():
        if getattr(getattr(c, section), key) is None:
            setattr(getattr(c, section), key, v[field])
    if m.num_classes is None:
        m.num_classes = num_classes if num_classes is not None else d.num_classes
    if m.num_classes is None:
        raise ValueError("model.num_classes is null and the data source does not say how many classes it has.")
    if num_classes is not None and m.num_classes != num_classes:
        raise ValueError(
            f"model.num_classes={m.num_classes} but {d.name!r} has {num_classes} classes: the labels would not fit "
            "the classifier. Set model.num_classes to match (or null); a model_dir's config.yaml, read when no "
            "--config is given, pins the value of the run that wrote it.")
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
    if p.min_image_size is None:
        p.min_image_size = min(v["min_train_size"], t.image_size)
    if p.min_randaug_magnitude is None:
        p.min_randaug_magnitude = min(v["min_randaug_magnitude"], t.randaug_magnitude)
    if p.min_dropout_rate is None:
        p.min_dropout_rate = min(v["min_dropout_rate"], m.dropout_rate)
    if p.min_drop_connect_rate is None:
        p.min_drop_connect_rate = m.drop_connect_rate
    if e.image_size is None:
        e.image_size = v["eval_size"] or t.image_size
    e.batch_size = t.global_batch_size if e.batch_size is None else e.batch_size
    if e.drop_remainder is None:
        e.drop_remainder = bool(on_tpu)
    if r.precision == "auto":
        r.precision = "mixed_bfloat16" if on_tpu else "float32"
    if r.jit_compile == "auto":
        r.jit_compile = bool(on_tpu)
    return c
