"""Checks and normalizes what every exporter needs: an inference copy of the model, its image
size, its class names and ``top_k``."""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence

import keras

from effnet_tf import keras_internals
from effnet_tf.export.signatures import head_activation


def num_classes(model: keras.Model) -> int:
    """Classes of ``model``'s head (its last output dimension)."""
    return int(model.outputs[0].shape[-1])


def check_classifier(model: keras.Model) -> None:
    """Raises ``ValueError`` unless ``model`` is an image classifier that takes 0..255 pixels."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model, got {type(model).__name__}.")
    if getattr(model, "include_top", True) is False:
        raise ValueError("Cannot export a model built with include_top=False: the serving signatures "
                         "return class probabilities, so the model needs its classification head.")
    if getattr(model, "include_preprocessing", True) is False:
        raise ValueError("Cannot export a model built with include_preprocessing=False: exported models "
                         "take 0..255 pixels and normalize them inside (build with include_preprocessing=True).")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"Expected a model with one image input and one output, got "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs.")
    if model.inputs[0].shape[-1] != 3:
        raise ValueError(f"Expected a model that takes RGB images [N, H, W, 3], got input shape "
                         f"{tuple(model.inputs[0].shape)}.")
    head_activation(model)


def resolve_image_size(model: keras.Model, image_size: Optional[int]) -> int:
    """``image_size``, or the model variant's eval size; a clear error when neither is known."""
    if image_size is None:
        variant = getattr(model, "variant", None)
        fixed = tuple(model.inputs[0].shape[1:3])
        if variant is not None:
            image_size = variant.eval_size
        elif fixed[0] is not None and fixed[0] == fixed[1]:
            image_size = fixed[0]
        else:
            raise ValueError("image_size is required: the model has no registered variant (custom block "
                             "strings) and no fixed input size, so its eval size is unknown.")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
    return image_size


def check_class_names(class_names: Optional[Sequence[str]], classes: int) -> Optional[List[str]]:
    """``class_names`` as a list of ``classes`` strings (or None)."""
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)):
        raise ValueError("class_names must be a sequence of strings, not one string.")
    names = [str(name) for name in class_names]
    if len(names) != classes:
        raise ValueError(f"Got {len(names)} class names for a model with {classes} classes.")
    return names


def check_top_k(top_k: int, classes: int) -> int:
    """``top_k`` capped at the number of classes."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}.")
    return min(top_k, classes)


@contextlib.contextmanager
def float32_policy() -> Iterator[None]:
    """Builds inside the ``with`` body get float32 layers (the global dtype policy is restored after)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _needs_copy(model: keras.Model) -> bool:
    layers = keras_internals.flatten_layers(model, include_self=True)
    mixed = any(layer.dtype_policy.compute_dtype != "float32" for layer in layers)
    return mixed or bool(getattr(model, "batchnorm_synchronized", False)) or getattr(model, "optimizer", None) is not None


def inference_model(model: keras.Model) -> keras.Model:
    """A float32, uncompiled model with ``model``'s current weights (``model`` itself when it is one).

    A model trained under ``mixed_bfloat16``, with synchronized BatchNorm, or compiled (whose
    ``.keras`` file would carry the optimizer) is rebuilt from its config in float32 with plain
    BatchNorm, and its weights are copied: that is what serving, TFLite and fine-tuning want.
    Weights are read when this is called, so call it inside ``ema_weights(...)`` for the EMA.
    """
    if not _needs_copy(model):
        return model
    from effnet_tf.model.efficientnet import EfficientNet

    if not isinstance(model, EfficientNet):
        # Another Keras classifier: clone its graph (layers keep the dtype policy their config
        # records) and copy the weights, which drops the optimizer.
        copy = keras.models.clone_model(model)
    else:
        config = model.get_config()
        if "batchnorm_synchronized" in config:
            config["batchnorm_synchronized"] = False
        with float32_policy():
            copy = type(model).from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def checked_inputs(model, image_size, class_names, top_k):
    """Validates an export request; returns (float32 inference model, image size, class names, top_k)."""
    check_classifier(model)
    image_size = resolve_image_size(model, image_size)
    classes = num_classes(model)
    class_names = check_class_names(class_names, classes)
    top_k = check_top_k(top_k, classes)
    return inference_model(model), image_size, class_names, top_k
