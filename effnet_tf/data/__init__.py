"""Input pipeline: sources (synthetic, TFDS, TFRecord shards, image folders), preprocessing,
RandAugment, MixUp/CutMix and fixed-shape size buckets.

Public API::

    src = get_source("synthetic" | "tfds:NAME" | "tfrecord:DIR" | "folder:DIR", **kwargs)
    buckets = make_buckets(min_size=128, max_size=384, step=32)
    size = snap_to_bucket(size, buckets)
    ds = build_dataset(src, split="train", image_size=224, global_batch_size=256, ...)
"""
from effnet_tf.data.buckets import make_buckets, snap_to_bucket
from effnet_tf.data.calibration import calibration_images
from effnet_tf.data.folder_source import FolderSource
from effnet_tf.data.mixing import cutmix, mix_batch, mixup
from effnet_tf.data.pipeline import build_dataset
from effnet_tf.data.preprocessing import preprocess_eval, preprocess_train
from effnet_tf.data.rand_augment import OPS as RANDAUGMENT_OPS
from effnet_tf.data.rand_augment import apply_op, randaugment
from effnet_tf.data.from_config import open_source
from effnet_tf.data.registry import get_source
from effnet_tf.data.sources import TRAIN, VALIDATION, Source
from effnet_tf.data.synthetic import SHAPES, SyntheticSource
from effnet_tf.data.tfds_source import TFDSSource
from effnet_tf.data.tfrecord_source import TFRecordSource

__all__ = [
    "FolderSource", "RANDAUGMENT_OPS", "SHAPES", "Source", "SyntheticSource", "TFDSSource",
    "TFRecordSource", "TRAIN", "VALIDATION", "apply_op", "build_dataset", "calibration_images", "cutmix",
    "get_source", "make_buckets", "open_source", "mix_batch", "mixup", "preprocess_eval", "preprocess_train",
    "randaugment", "snap_to_bucket",
]
