"""Model: compound scaling, the variant registry and the EfficientNet builder."""
from effnet_tf.model.efficientnet import EfficientNet, build_model
from effnet_tf.model.features import feature_extractor
from effnet_tf.model.regularization import get_regularization, set_regularization
from effnet_tf.model.variants import VariantSpec, get_variant, list_models

__all__ = [
    "EfficientNet", "build_model", "feature_extractor", "get_regularization", "set_regularization",
    "VariantSpec", "get_variant", "list_models",
]
