"""Published reference figures, shared by the tests (one place to read them from): parameter
counts of keras.applications' EfficientNetB0-B7 and EfficientNetV2B0-L (weights=None), and of
V2-XL from the official tensorflow/tpu code (models/official/efficientnet_v2)."""

# Total parameters (include_top, 1000 classes, BN statistics included); identical in
# keras.applications (whose V1 models count 7 more values in an input Normalization layer)
# and the official tests.
REFERENCE_PARAMS = {
    "efficientnet-b0": 5_330_564, "efficientnet-b1": 7_856_232, "efficientnet-b2": 9_177_562,
    "efficientnet-b3": 12_320_528, "efficientnet-b4": 19_466_816, "efficientnet-b5": 30_562_520,
    "efficientnet-b6": 43_265_136, "efficientnet-b7": 66_658_680,
    "efficientnetv2-b0": 7_200_312, "efficientnetv2-b1": 8_212_124, "efficientnetv2-b2": 10_178_374,
    "efficientnetv2-b3": 14_467_622, "efficientnetv2-s": 21_612_360, "efficientnetv2-m": 54_431_388,
    "efficientnetv2-l": 119_027_848, "efficientnetv2-xl": 208_896_832,
}

# Edge variants, counted as the official tables and timm count them: trainable parameters (BN
# moving statistics excluded), 1000 classes. EfficientNet-Lite0 exactly (keras-hub's preset:
# 4,652,008); Lite1-4 to the official lite/README.md's 0.1M rounding; EdgeTPU-S/M/L to timm's
# 0.01M rounding (tf_efficientnet_es/em/el: 5.44M, 6.90M, 10.59M). (value, rounding unit)
EDGE_TRAINABLE_PARAMS = {
    "efficientnet-lite0": (4_652_008, 1),
    "efficientnet-lite1": (5.4e6, 0.1e6), "efficientnet-lite2": (6.1e6, 0.1e6),
    "efficientnet-lite3": (8.2e6, 0.1e6), "efficientnet-lite4": (13.0e6, 0.1e6),
    "efficientnet-edgetpu-s": (5.44e6, 0.01e6), "efficientnet-edgetpu-m": (6.90e6, 0.01e6),
    "efficientnet-edgetpu-l": (10.59e6, 0.01e6),
}
