"""effnet_tf: EfficientNet and EfficientNetV2 for TensorFlow / Keras 3, built to train on Cloud TPU.

Layers, bottom up; each imports only from those below it: ``storage`` and ``keras_internals``;
``blocks`` → ``model``; ``config`` (reads the model registry); ``data`` (needs no model code);
``training`` and ``export`` side by side (neither imports the other); ``run`` (the driver, the
CLI's modes, restoring and exporting a run) on top. docs/architecture.md has the map.
"""
from effnet_tf.model import (
    EfficientNet,
    VariantSpec,
    build_model,
    feature_extractor,
    get_variant,
    list_models,
    set_regularization,
)
from effnet_tf.model.keras_weights import load_keras_applications_weights

__version__ = "0.1.0"
__all__ = [
    "EfficientNet", "VariantSpec", "build_model", "feature_extractor", "get_variant", "list_models",
    "set_regularization", "load_keras_applications_weights", "__version__",
]
