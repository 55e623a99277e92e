"""Images to calibrate a quantized model on: a random sample of a split, preprocessed as for
evaluation (what the served model will see)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from effnet_tf.data import preprocessing
from effnet_tf.data.sources import Source

_SHUFFLE_BUFFER = 10_000


def calibration_images(source: Source, split: str, image_size: int, count: int, seed: int = 0,
                       crop_fraction=None, shuffle_buffer: int = _SHUFFLE_BUFFER) -> np.ndarray:
    """``count`` images ``[count, size, size, 3]`` uint8 of ``split``, in random order (a folder or
    shard sorted by class still gives every class), through the eval crop (``crop_fraction``, as
    ``preprocess_eval``) and resize.

    ``shuffle_buffer`` records are shuffled (encoded, before decoding): fewer read less before
    the first image. Undecodable images are skipped: calibration needs ranges, not every record.
    Fewer than ``count`` come back only when the split is smaller; none at all is an error.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"calibration count must be an int >= 1, got {count!r}.")
    source.check_split(split)
    buffer = min(shuffle_buffer, source.num_examples(split) or shuffle_buffer)
    records = source.records(split, shuffle=True, seed=seed, shuffle_buffer=buffer)

    def eval_image(record):
        example = source.decode_record(record)
        return preprocessing.preprocess_eval(example["image"], image_size, encoded=source.encoded,
                                             crop_fraction=crop_fraction)

    images = records.map(eval_image, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().take(count)
    batch = next(iter(images.batch(count)), None)
    if batch is None:
        raise ValueError(f"{source.name} split {split!r} has no readable image to calibrate on.")
    return batch.numpy()
