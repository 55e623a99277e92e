"""TensorFlow Datasets by name and split (``imagenet2012``, ``oxford_flowers102``, ``cifar10``...).

Images are read *encoded* (``SkipDecoding``) so the pipeline can decode-and-crop JPEGs; TFDS
shards the files per input pipeline from the ``InputContext`` and shuffles file order with a
seed. Nothing is ever downloaded: the dataset must already be prepared in ``data_dir``
(local or ``gs://``).
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from effnet_tf.data.sources import TRAIN, VALIDATION, Source, shuffle_cache


class TFDSSource(Source):
    """A prepared TFDS image-classification dataset.

    Args:
      name: TFDS name, optionally with a version (``imagenet2012:5.1.0``).
      data_dir: where the dataset is prepared (local or ``gs://``); TFDS' default if None.
      image_key, label_key: feature names; default to the dataset's supervised keys.
    """

    encoded = True

    def __init__(self, name: str, data_dir: Optional[str] = None,
                 image_key: Optional[str] = None, label_key: Optional[str] = None):
        import tensorflow_datasets as tfds  # imported lazily: slow, and optional elsewhere

        self._tfds = tfds
        try:
            self.builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise ValueError(f"tfds: unknown dataset {name!r} (see tfds.list_builders())") from None
        info = self.builder.info
        supervised = info.supervised_keys or (None, None)
        self.image_key = image_key or supervised[0] or "image"
        self.label_key = label_key or supervised[1] or "label"
        for key, kind in ((self.image_key, tfds.features.Image),
                          (self.label_key, tfds.features.ClassLabel)):
            feature = info.features[key] if key in info.features else None
            if not isinstance(feature, kind):
                raise ValueError(
                    f"tfds: {name!r} has no {kind.__name__} feature {key!r}; features: "
                    f"{list(info.features.keys())}")
        label = info.features[self.label_key]
        names = label.names if label.names and len(label.names) == label.num_classes else None
        super().__init__(f"tfds:{name}", label.num_classes, names)
        self.tfds_name = name
        self.data_dir = data_dir

    @property
    def splits(self):
        return tuple(self.builder.info.splits.keys())

    def resolve_split(self, split: str) -> str:
        """Maps ``split`` to a TFDS split; 'validation' falls back to 'test' where only that
        exists. Split slices (``train[:90%]``) pass through. Without split metadata (as under
        ``tfds.testing.mock_data``) every name passes through."""
        if not isinstance(split, str) or not split:
            raise ValueError(f"{self.name}: split must be a non-empty string, got {split!r}")
        known = self.splits
        if not known or any(c in split for c in "[+"):
            return split
        if split == VALIDATION and VALIDATION not in known and "test" in known:
            return "test"
        if split not in known:
            raise ValueError(f"{self.name}: unknown split {split!r}; available: {list(known)}")
        return split

    def check_split(self, split):
        self.resolve_split(split)
        return split

    def num_examples(self, split):
        resolved = self.resolve_split(split)
        if not self.splits:
            return None
        try:
            return int(self.builder.info.splits[resolved].num_examples)
        except (KeyError, ValueError):
            return None

    def records(self, split, *, input_context=None, shuffle=False, seed=None, cache=False,
                shuffle_buffer=1024):
        tfds = self._tfds
        resolved = self.resolve_split(split)
        read_config = tfds.ReadConfig(input_context=input_context, shuffle_seed=seed,
                                      try_autocache=False, add_tfds_id=True)
        try:
            ds = self.builder.as_dataset(
                split=resolved, shuffle_files=shuffle, read_config=read_config,
                decoders={self.image_key: tfds.decode.SkipDecoding()})
        except AssertionError as e:  # TFDS' way of saying "not prepared"
            raise FileNotFoundError(
                f"tfds: dataset {self.tfds_name!r} is not prepared in data_dir="
                f"{self.data_dir or '(TFDS default)'!r} (nothing is downloaded "
                f"at run time): {e}") from None
        image_key, label_key = self.image_key, self.label_key

        def to_record(example):
            origin = example.get("tfds_id", tf.constant(f"{self.tfds_name}/{resolved}"))
            return {"image": example[image_key], "label": tf.cast(example[label_key], tf.int64),
                    "origin": origin}

        ds = ds.map(to_record, num_parallel_calls=tf.data.AUTOTUNE)
        return shuffle_cache(ds, shuffle=shuffle, seed=seed, cache=cache,
                             buffer_size=shuffle_buffer)

    def decode_record(self, record):
        return record
