"""The one interface every data source implements, and ``get_source`` to pick one by name.

A source turns a split name into a ``tf.data.Dataset`` of *records* (cheap keys such as file
paths, example indices or serialized examples) and decodes one record into a dict::

    {"image": encoded bytes (tf.string scalar) or uint8 [h, w, 3],
     "label": int64 scalar in [0, num_classes),
     "origin": tf.string scalar naming the shard/file/example (for error messages),
     "bbox":  optional float32 [4] (ymin, xmin, ymax, xmax) object box, normalized}

Keeping records cheap lets the pipeline shuffle, shard and cache before the expensive decode,
which then runs in one parallel map together with cropping and augmentation. The sources are
picked by name in ``effnet_tf.data.registry``.
"""
from __future__ import annotations

import abc
from typing import List, Optional, Sequence

import tensorflow as tf

TRAIN = "train"
VALIDATION = "validation"


class Source(abc.ABC):
    """Base class of the data sources (synthetic, TFDS, TFRecord shards, image folders)."""

    #: True when ``decode_record(...)["image"]`` is encoded bytes (JPEG, PNG, ...), False for uint8.
    encoded: bool = True
    #: Fraction of the record's ``bbox`` that a random training crop must keep.
    min_object_covered: float = 0.1

    def __init__(self, name: str, num_classes: int, class_names: Optional[Sequence[str]] = None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"{name}: num_classes must be an int >= 2, got {num_classes!r}")
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if len(class_names) != num_classes:
                raise ValueError(
                    f"{name}: {len(class_names)} class names for num_classes={num_classes}")
        self.name = name
        self._num_classes = num_classes
        self._class_names = class_names

    @property
    def num_classes(self) -> int:
        """Number of classes; labels lie in ``[0, num_classes)``."""
        return self._num_classes

    @property
    def class_names(self) -> Optional[List[str]]:
        """Class names indexed by label, or None where the source does not know them."""
        return None if self._class_names is None else list(self._class_names)

    @property
    def splits(self) -> Sequence[str]:
        """Names of the splits this source can read."""
        return (TRAIN, VALIDATION)

    def num_examples(self, split: str) -> Optional[int]:
        """Number of examples in ``split`` (all pipelines together), or None if unknown."""
        self.check_split(split)
        return None

    def check_split(self, split: str) -> str:
        """Returns ``split`` if this source can read it, else raises ValueError."""
        if split not in self.splits:
            raise ValueError(
                f"{self.name}: unknown split {split!r}; available splits: {list(self.splits)}")
        return split

    @abc.abstractmethod
    def records(self, split: str, *, input_context: Optional[tf.distribute.InputContext] = None,
                shuffle: bool = False, seed: Optional[int] = None, cache: bool = False,
                shuffle_buffer: int = 1024) -> tf.data.Dataset:
        """Returns the (finite) records of ``split`` for this input pipeline.

        With ``input_context`` the records are sharded per input pipeline (by file where there
        are enough files). With ``shuffle`` they come in a random order that changes every
        epoch (``seed`` makes it reproducible); ``cache`` keeps the encoded records in memory
        after the first epoch and ``shuffle_buffer`` bounds the shuffle buffer of records that
        are too large to shuffle globally.
        """

    @abc.abstractmethod
    def decode_record(self, record) -> dict:
        """Turns one record into the dict described in the module docstring (graph mode)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, num_classes={self.num_classes})"


def shard_for_pipeline(ds: tf.data.Dataset,
                       input_context: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
    """Keeps every n-th element for input pipeline i of n (no-op without a context)."""
    if input_context is None or input_context.num_input_pipelines <= 1:
        return ds
    return ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def shuffle_cache(ds: tf.data.Dataset, *, shuffle: bool, seed: Optional[int], cache: bool,
                  buffer_size: int) -> tf.data.Dataset:
    """Optionally caches ``ds`` and then shuffles it with a bounded, per-epoch buffer."""
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)
    return ds
