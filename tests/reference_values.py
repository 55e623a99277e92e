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
