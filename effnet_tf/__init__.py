"""effnet_tf: EfficientNet and EfficientNetV2 for TensorFlow / Keras 3, built to train on Cloud TPU.

Layers: blocks → model → data → training → export, each importable on its own.
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
