"""A model from a resolved ``ModelConfig`` (``effnet_tf.config``): the one place that turns the
config's model section into ``build_model`` arguments, for training and for rebuilding a run's
model to restore or export it. Duck-typed: any object with the section's fields works.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import keras

from effnet_tf.blocks.block_string import decode_all
from effnet_tf.model.efficientnet import build_model
from effnet_tf.model.keras_weights import load_keras_applications_weights


def build_kwargs(model_config) -> Dict[str, Any]:
    """``build_model`` arguments of a resolved model config: a logits head (the loss applies the
    softmax) and the input normalization inside the model."""
    m = model_config
    return dict(
        name=m.name, num_classes=m.num_classes, blocks=m.blocks, width=m.width, depth=m.depth,
        dropout_rate=m.dropout_rate, drop_connect_rate=m.drop_connect_rate,
        classifier_activation=None, include_preprocessing=True,
    )


def build_from_config(model_config, *, for_training: bool = True) -> keras.Model:
    """The model of ``model_config``; ``for_training`` adds synchronized BatchNorm and gradient
    checkpointing when configured (a model rebuilt for export or evaluation wants neither)."""
    synchronized = bool(model_config.sync_batch_norm) and for_training
    checkpointing = bool(model_config.gradient_checkpointing) and for_training
    return build_model(**build_kwargs(model_config), batchnorm_synchronized=synchronized or None,
                       gradient_checkpointing=checkpointing or None)


def load_initial_weights(model: keras.Model, weights: str) -> Dict[str, int]:
    """Copies ``weights`` into ``model``, all but a mismatched classifier head; returns the copy
    counts. ``weights``: 'imagenet' (keras.applications), a keras.applications .h5/.weights.h5
    file, or an effnet_tf model to fine-tune from: its ``.keras`` file, export directory or run
    directory (``<model_dir>/export/model.keras``)."""
    from effnet_tf.model.transfer import copy_weights_by_name, find_keras_file

    own = find_keras_file(weights) if weights != "imagenet" else None
    if own is not None:  # our layers are registered: this module imports the builder
        return copy_weights_by_name(model, keras.saving.load_model(own, compile=False))
    if weights == "imagenet":
        spec = getattr(model, "variant", None)
        if spec is None or not spec.keras_application:
            name = spec.name if spec is not None else "custom blocks"
            raise ValueError(f"model.weights='imagenet' needs a variant with keras.applications weights; "
                             f"{name!r} has none.")
        source = getattr(keras.applications, spec.keras_application)(weights="imagenet", include_top=False)
    else:
        source = weights
    return load_keras_applications_weights(model, source, skip_mismatched_head=True)


def total_stride(model_config) -> Optional[int]:
    """How many input pixels one pixel of the last feature map spans: the stem's 2 times every
    stage's stride (32 for the published variants). None when the config names no blocks."""
    blocks = model_config.blocks
    if not blocks and model_config.name:
        from effnet_tf.model.variants import get_variant

        blocks = get_variant(model_config.name).blocks
    if not blocks:
        return None
    stride = 2
    for args in decode_all(list(blocks)):
        stride *= args.stride
    return stride
