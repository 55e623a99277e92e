"""ImageNet-format TFRecord shards (``image/encoded`` JPEG bytes, ``image/class/label``).

The common TPU ImageNet shards (``train-00000-of-01024`` ...) store 1-based labels, hence the
default ``label_offset=1``. Files are sharded per input pipeline (host) *before* shuffling
and read interleaved, so each host reads only its own files.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from effnet_tf.data.sources import TRAIN, VALIDATION, Source, shard_for_pipeline, shuffle_cache
from effnet_tf.storage.errors import error_line

_READ_BUFFER_BYTES = 8 << 20  # large sequential reads: GCS throughput


def _is_absolute(path: str) -> bool:
    return os.path.isabs(path) or "://" in path


class TFRecordSource(Source):
    """TFRecord shards in ``directory`` matched per split by a glob pattern.

    Args:
      directory: local or ``gs://`` folder holding the shards.
      train_pattern, validation_pattern: globs relative to ``directory`` (absolute ones are
        used as they are).
      num_classes: labels lie in ``[0, num_classes)`` after subtracting ``label_offset``.
      label_offset: subtracted from the stored label (1 for the common ImageNet shards).
      class_names: optional names indexed by label.
      train_examples, validation_examples: split sizes if known (TFRecords do not say).
      image_key, label_key: feature names.
      cycle_length: files read concurrently by the interleave.
    """

    encoded = True

    def __init__(self, directory: str, train_pattern: str = "train-*",
                 validation_pattern: str = "validation-*", num_classes: int = 1000,
                 label_offset: int = 1, class_names: Optional[Sequence[str]] = None,
                 train_examples: Optional[int] = None, validation_examples: Optional[int] = None,
                 image_key: str = "image/encoded", label_key: str = "image/class/label",
                 cycle_length: int = 16):
        super().__init__(f"tfrecord:{directory}", num_classes, class_names)
        if not tf.io.gfile.isdir(directory):
            raise FileNotFoundError(f"tfrecord: directory {directory!r} does not exist")
        if isinstance(label_offset, bool) or not isinstance(label_offset, int):
            raise ValueError(f"tfrecord: label_offset must be an int, got {label_offset!r}")
        self.directory = directory
        self.label_offset = label_offset
        self.image_key, self.label_key = image_key, label_key
        self.cycle_length = max(1, int(cycle_length))
        self._patterns: Dict[str, str] = {}
        self._files: Dict[str, List[str]] = {}
        for split, pattern in ((TRAIN, train_pattern), (VALIDATION, validation_pattern)):
            if pattern is None:
                continue
            full = pattern if _is_absolute(pattern) else os.path.join(directory, pattern)
            self._patterns[split] = full
            self._files[split] = sorted(tf.io.gfile.glob(full))
        if not any(self._files.values()):
            raise FileNotFoundError(
                f"tfrecord: no files match {sorted(self._patterns.values())} in {directory!r}")
        self._sizes = {TRAIN: train_examples, VALIDATION: validation_examples}

    @property
    def splits(self):
        return tuple(self._patterns)

    def files(self, split: str) -> List[str]:
        """The shard files of ``split`` (raises FileNotFoundError if the pattern matched none)."""
        self.check_split(split)
        if not self._files[split]:
            raise FileNotFoundError(
                f"tfrecord: pattern {self._patterns[split]!r} for split {split!r} matches no files")
        return list(self._files[split])

    def find_unreadable(self, split: str, max_bytes: int = 1 << 30) -> Optional[str]:
        """Reads the shards of ``split`` in order and names the first record that cannot be read
        (``"<file>: record <n>: <reason>"``), or None when every shard reads to its end. Gives
        up (None) past ``max_bytes`` of shards: a diagnosis after a read error, not a full scan
        of ImageNet."""
        files, total = self.files(split), 0
        for path in files:
            total += tf.io.gfile.stat(path).length
            if total > max_bytes:
                return None
            count = 0
            try:
                for _ in tf.data.TFRecordDataset(path):
                    count += 1
            except tf.errors.OpError as error:
                return f"{path}: record {count}: {error_line(error)}"
            if count == 0:
                return f"{path}: no records"
        return None

    def num_examples(self, split):
        self.check_split(split)
        return self._sizes.get(split)

    def records(self, split, *, input_context=None, shuffle=False, seed=None, cache=False,
                shuffle_buffer=1024):
        files = self.files(split)
        pipelines = input_context.num_input_pipelines if input_context else 1
        shard_files = len(files) >= pipelines
        if not shard_files:
            logging.warning("tfrecord: %d files for %d input pipelines; sharding records "
                            "instead (every pipeline reads every file)", len(files), pipelines)
        file_ds = tf.data.Dataset.from_tensor_slices(files)
        if shard_files:
            file_ds = shard_for_pipeline(file_ds, input_context)
        if shuffle:
            file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

        def read(path):
            def tag(index, serialized):
                origin = tf.strings.join([path, " (record ", tf.strings.as_string(index), ")"])
                return {"serialized": serialized, "origin": origin}
            records = tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER_BYTES)
            return records.enumerate().map(tag)

        ds = file_ds.interleave(read, cycle_length=min(self.cycle_length, len(files)),
                                block_length=1, num_parallel_calls=tf.data.AUTOTUNE)
        if not shard_files:
            ds = shard_for_pipeline(ds, input_context)
        return shuffle_cache(ds, shuffle=shuffle, seed=seed, cache=cache,
                             buffer_size=shuffle_buffer)

    def decode_record(self, record):
        features = tf.io.parse_single_example(record["serialized"], {
            self.image_key: tf.io.FixedLenFeature([], tf.string),
            self.label_key: tf.io.FixedLenFeature([], tf.int64),
        })
        return {"image": features[self.image_key],
                "label": features[self.label_key] - self.label_offset,
                "origin": record["origin"]}


def write_example(writer, image_bytes: bytes, label: int, image_key: str = "image/encoded",
                  label_key: str = "image/class/label") -> None:
    """Writes one ImageNet-format example (handy for tests and small conversions)."""
    example = tf.train.Example(features=tf.train.Features(feature={
        image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }))
    writer.write(example.SerializeToString())
