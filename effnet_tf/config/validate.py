"""Checks that types alone cannot make: ranges, consistency between keys, and the hardware.

``validate`` runs once per run, on the resolved config (``effnet_tf.training.plan.make_plan``);
it also accepts a config with nulls (they are skipped), which is how the shipped YAML files are
checked in the tests and docs.
"""

from __future__ import annotations

from typing import Optional

from effnet_tf.config.schema import AUTO, EXPORT_FORMATS, ExperimentConfig, config_fields, get_value


def validate(config: ExperimentConfig, num_replicas: Optional[int] = None) -> ExperimentConfig:
    """Checks values that types alone cannot; raises ``ValueError`` naming the key and the allowed range."""
    errors = []

    def need(condition: bool, message: str) -> None:
        if not condition:
            errors.append(message)

    for key, f in config_fields():
        choices = f.metadata.get("choices")
        value = get_value(config, key)
        if choices is not None and value not in choices and value is not None:
            errors.append(f"{key}={value!r} is not one of {list(choices)}.")

    m, t, p, e, r, d = config.model, config.train, config.progressive, config.eval, config.runtime, config.data
    need(m.name is not None or m.blocks, "model.name or model.blocks must be set.")
    need(bool(config.export.formats) and set(config.export.formats) <= set(EXPORT_FORMATS),
         f"export.formats={config.export.formats!r} must be a non-empty list of {list(EXPORT_FORMATS)}.")
    need(config.eval.every_epochs is None or config.eval.every_epochs >= 1,
         f"eval.every_epochs={config.eval.every_epochs!r} must be null or >= 1.")
    need(config.export.calibration_examples >= 1,
         f"export.calibration_examples={config.export.calibration_examples!r} must be >= 1.")
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
    need(t.global_batch_size is None or t.global_batch_size > 0,
         f"train.global_batch_size={t.global_batch_size!r} must be > 0 (or null: fitted to the data).")
    if num_replicas and t.global_batch_size is not None:
        need(t.global_batch_size % num_replicas == 0,
             f"train.global_batch_size={t.global_batch_size} must be divisible by the {num_replicas} replicas.")
        if e.batch_size is not None:
            need(e.batch_size % num_replicas == 0,
                 f"eval.batch_size={e.batch_size} must be divisible by the {num_replicas} replicas.")
    need(t.base_learning_rate is None or t.base_learning_rate > 0,
         f"train.base_learning_rate={t.base_learning_rate!r} must be > 0.")
    need(t.warmup_epochs is None or t.warmup_epochs >= 0, f"train.warmup_epochs={t.warmup_epochs!r} must be >= 0.")
    need(0 <= t.freeze_backbone_epochs <= t.epochs,
         f"train.freeze_backbone_epochs={t.freeze_backbone_epochs!r} must be in [0, train.epochs={t.epochs}].")
    need(t.trainable_blocks is None or t.trainable_blocks >= 0,
         f"train.trainable_blocks={t.trainable_blocks!r} must be >= 0 (or null: the whole network).")
    need(t.finetune_lr_scale > 0, f"train.finetune_lr_scale={t.finetune_lr_scale!r} must be > 0.")
    need(t.regularization is None or 0 <= t.regularization <= 1,
         f"train.regularization={t.regularization!r} must be in [0, 1] (or null: from train.epochs).")
    need(0 < t.lr_decay_rate <= 1, f"train.lr_decay_rate={t.lr_decay_rate!r} must be in (0, 1].")
    need(t.lr_decay_epochs > 0, f"train.lr_decay_epochs={t.lr_decay_epochs!r} must be > 0.")
    need(0 <= t.lr_min_ratio <= 1, f"train.lr_min_ratio={t.lr_min_ratio!r} must be in [0, 1].")
    need(t.rmsprop_initial_rms >= 0, f"train.rmsprop_initial_rms={t.rmsprop_initial_rms!r} must be >= 0.")
    need(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay!r} must be >= 0.")
    need(0 <= t.label_smoothing < 1, f"train.label_smoothing={t.label_smoothing!r} must be in [0, 1).")
    need(t.ema_decay is None or t.ema_decay == AUTO or (not isinstance(t.ema_decay, (str, bool))
                                                       and 0 <= t.ema_decay < 1),
         f"train.ema_decay={t.ema_decay!r} must be in [0, 1), null (no EMA) or 'auto'.")
    for key in ("train.randaug_magnitude", "train.mixup_alpha", "train.cutmix_alpha",
                "progressive.min_randaug_magnitude", "progressive.min_mixup_alpha", "progressive.min_cutmix_alpha"):
        value = get_value(config, key)
        need(value is None or value >= 0, f"{key}={value!r} must be >= 0.")
    need(d.randaug_layers >= 0, f"data.randaug_layers={d.randaug_layers!r} must be >= 0.")
    need(d.crop_area_min is None or 0 < d.crop_area_min <= 1, f"data.crop_area_min={d.crop_area_min!r} must be in (0, 1].")
    need(d.flip_probability is None or 0 <= d.flip_probability <= 1,
         f"data.flip_probability={d.flip_probability!r} must be in [0, 1].")
    need(d.eval_crop_fraction is None or 0 < d.eval_crop_fraction <= 1,
         f"data.eval_crop_fraction={d.eval_crop_fraction!r} must be in (0, 1] (1 = the whole image).")
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
    stride = _total_stride(m)
    if stride:
        for key in ("train.image_size", "progressive.min_image_size", "eval.image_size"):
            value = get_value(config, key)
            need(value is None or value <= 0 or value >= stride,
                 f"{key}={value} is smaller than the network's total stride {stride} (the stem's 2 times its "
                 f"stages' strides): use at least {stride} (multiples of {stride} keep every feature map whole).")
    if errors:
        raise ValueError("Invalid configuration: " + " ".join(errors))
    return config


def _total_stride(model_config) -> Optional[int]:
    """The network's total stride, or None when its blocks are not known or not valid (the
    builder reports bad block strings itself)."""
    from effnet_tf.model.from_config import total_stride

    try:
        return total_stride(model_config)
    except ValueError:
        return None
