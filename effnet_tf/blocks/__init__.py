"""Blocks: block-string grammar and the Keras layers EfficientNets are made of."""
from effnet_tf.blocks.block_string import BlockArgs, decode, decode_all, encode, encode_all
from effnet_tf.blocks.layers import ImageNormalization, ScheduledDropout, SqueezeExcite, StochasticDepth
from effnet_tf.blocks.mbconv import BLOCK_TYPES, FusedMBConv, MBConv

__all__ = [
    "BlockArgs", "decode", "decode_all", "encode", "encode_all", "BLOCK_TYPES", "FusedMBConv",
    "ImageNormalization", "MBConv", "ScheduledDropout", "SqueezeExcite", "StochasticDepth",
]
