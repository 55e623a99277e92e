"""Image folders: one sub-folder of JPEG/PNG files per class.

Either ``root/<class>/*.jpg`` (a stable hash of each file's path assigns
``validation_fraction`` of every class to the validation split), or ``root/train/<class>/...``
with ``root/validation/<class>/...`` (also accepted: ``val/``, ``valid/``). Class names are
the sorted train sub-folder names; label i is ``class_names[i]``.
"""
from __future__ import annotations

import os
import zlib
from typing import Dict, List, Tuple

import tensorflow as tf

from effnet_tf.data.sources import TRAIN, VALIDATION, Source, shard_for_pipeline, shuffle_cache

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_VALIDATION_DIRS = ("validation", "val", "valid")


def _subdirs(path: str) -> List[str]:
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(path)]
    return sorted(n for n in names if not n.startswith(".")
                  and tf.io.gfile.isdir(os.path.join(path, n)))


def _images(path: str) -> List[str]:
    names = [n for n in tf.io.gfile.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)
             and not n.startswith(".")]
    return sorted(os.path.join(path, n) for n in names)


def _scan(root: str, class_names: List[str]) -> Dict[str, List[str]]:
    files = {}
    for name in class_names:
        images = _images(os.path.join(root, name))
        if not images:
            raise ValueError(
                f"folder: class folder {os.path.join(root, name)!r} contains no images "
                f"(allowed extensions: {', '.join(IMAGE_EXTENSIONS)})")
        files[name] = images
    return files


class FolderSource(Source):
    """Images in one sub-folder per class (see the module docstring).

    Args:
      directory: local or ``gs://`` root folder.
      validation_fraction: for the flat layout, the fraction of each class (at least one
        image when the class has two or more) held out as the validation split.
    """

    encoded = True

    def __init__(self, directory: str, validation_fraction: float = 0.1):
        if not tf.io.gfile.isdir(directory):
            raise FileNotFoundError(f"folder: directory {directory!r} does not exist")
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(
                f"folder: validation_fraction must be in [0, 1), got {validation_fraction!r}")
        self.directory = directory
        top = _subdirs(directory)
        split_dirs = "train" in top
        train_root = os.path.join(directory, "train") if split_dirs else directory
        class_names = _subdirs(train_root)
        if len(class_names) < 2:
            raise ValueError(
                f"folder: {train_root!r} has {len(class_names)} class sub-folder(s) "
                f"{class_names}; need at least 2 (one sub-folder of images per class)")
        super().__init__(f"folder:{directory}", len(class_names), class_names)
        train = _scan(train_root, class_names)
        self._split_files: Dict[str, List[Tuple[str, int]]] = {}
        if split_dirs:
            self._split_files[TRAIN] = [(f, i) for i, c in enumerate(class_names) for f in train[c]]
            val_name = next((d for d in _VALIDATION_DIRS if d in top), None)
            if val_name is not None:
                val_root = os.path.join(directory, val_name)
                val_classes = _subdirs(val_root)
                unknown = sorted(set(val_classes) - set(class_names))
                if unknown:
                    raise ValueError(
                        f"folder: {val_root!r} has classes {unknown} that are not in "
                        f"{train_root!r} (known classes: {class_names})")
                val = _scan(val_root, val_classes)
                self._split_files[VALIDATION] = [
                    (f, class_names.index(c)) for c in val_classes for f in val[c]]
        else:
            self._split_files[TRAIN], held_out = [], []
            for i, name in enumerate(class_names):
                # A stable hash of the path (not the sort order) picks the held-out files.
                ranked = sorted(train[name], key=lambda p: zlib.crc32(p.encode()))
                k = round(len(ranked) * validation_fraction)
                if validation_fraction > 0 and len(ranked) >= 2:
                    k = max(1, k)
                held_out += [(f, i) for f in sorted(ranked[:k])]
                self._split_files[TRAIN] += [(f, i) for f in sorted(ranked[k:])]
            if held_out:
                self._split_files[VALIDATION] = held_out

    @property
    def splits(self):
        return tuple(self._split_files)

    def files(self, split: str) -> List[Tuple[str, int]]:
        """``(path, label)`` pairs of ``split``."""
        return list(self._split_files[self.check_split(split)])

    def num_examples(self, split):
        return len(self._split_files[self.check_split(split)])

    def records(self, split, *, input_context=None, shuffle=False, seed=None, cache=False,
                shuffle_buffer=1024):
        pairs = self.files(split)
        paths = [p for p, _ in pairs]
        labels = [label for _, label in pairs]
        ds = tf.data.Dataset.from_tensor_slices({"origin": paths,
                                                 "label": tf.constant(labels, tf.int64)})
        ds = shard_for_pipeline(ds, input_context)
        if cache:  # cache the encoded bytes, then shuffle through a bounded buffer
            ds = ds.map(self._read, num_parallel_calls=tf.data.AUTOTUNE)
            return shuffle_cache(ds, shuffle=shuffle, seed=seed, cache=True,
                                 buffer_size=min(shuffle_buffer, len(paths)))
        if shuffle:  # paths are cheap: shuffle all of them
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        return ds

    @staticmethod
    def _read(record):
        return {"image": tf.io.read_file(record["origin"]), "label": record["label"],
                "origin": record["origin"]}

    def decode_record(self, record):
        return record if "image" in record else self._read(record)
