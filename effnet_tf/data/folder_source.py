"""Image folders: one sub-folder of images per class.

Either ``root/<class>/*.jpg`` (a stable hash of each file's path assigns
``validation_fraction`` of every class to the validation split), or ``root/train/<class>/...``
with ``root/validation/<class>/...`` (also accepted: ``val/``, ``valid/``). Class names are
the sorted train sub-folder names; label i is ``class_names[i]``.

Every format that ``tf.io.decode_image`` reads in TensorFlow 2.21 is an image: JPEG, PNG, GIF
(its first frame), BMP, WebP and JPEG XL. Everything else is ignored and *reported*
(``scan_report()``: files used per split, files ignored and why), as are hidden files, files
beside the class folders and folders nested inside a class folder.

EXIF orientation is not applied, here or in the exported serving signature (TensorFlow's
decoders ignore it, as do keras.utils.image_dataset_from_directory and PIL-based loaders): a
phone photo stored sideways trains and serves sideways, consistently. The scan samples the
JPEGs' EXIF headers and says how many are stored rotated, with the fix (rotate the files once).
"""
from __future__ import annotations

import os
import zlib
from collections import defaultdict
from typing import Dict, List, Tuple

import tensorflow as tf

from effnet_tf.data.exif import EXIF_SAMPLE, rotated_fraction
from effnet_tf.data.image_formats import IMAGE_EXTENSIONS
from effnet_tf.data.sources import TRAIN, VALIDATION, Source, shard_for_pipeline, shuffle_cache

_VALIDATION_DIRS = ("validation", "val", "valid")


class _Ignored:
    """Files the scan skipped, by reason (for the report)."""

    def __init__(self):
        self.by_reason: Dict[str, List[str]] = defaultdict(list)

    def add(self, reason: str, path: str) -> None:
        self.by_reason[reason].append(path)

    def summary(self, root: str, shown: int = 3) -> List[str]:
        lines = []
        for reason, found in sorted(self.by_reason.items()):
            names = [p if "://" in p else os.path.relpath(p, root) for p in found]
            more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
            lines.append(f"{len(found)} {reason} ({', '.join(names[:shown])}{more})")
        return lines


def _listing(path: str) -> Tuple[List[str], List[str]]:
    """(sub-folder names, file names) of ``path``, sorted."""
    folders, files = [], []
    for name in tf.io.gfile.listdir(path):
        bare = name.rstrip("/")
        (folders if name.endswith("/") or tf.io.gfile.isdir(os.path.join(path, bare)) else files).append(bare)
    return sorted(folders), sorted(files)


def _subdirs(path: str, ignored: _Ignored = None, beside: str = "the class folders") -> List[str]:
    folders, files = _listing(path)
    if ignored is not None:
        for name in files:
            ignored.add(f"file(s) beside {beside}", os.path.join(path, name))
    return [n for n in folders if not n.startswith(".")]


def _images(path: str, ignored: _Ignored) -> List[str]:
    folders, files = _listing(path)
    images = []
    for name in files:
        full = os.path.join(path, name)
        if name.startswith("."):
            ignored.add("hidden file(s)", full)
        elif not name.lower().endswith(IMAGE_EXTENSIONS):
            extension = os.path.splitext(name)[1].lower() or "(no extension)"
            ignored.add(f"file(s) that are not images ({extension})", full)
        else:
            images.append(full)
    for name in folders:
        ignored.add("folder(s) nested in a class folder (not read)", os.path.join(path, name))
    return images


def _scan(root: str, class_names: List[str], ignored: _Ignored) -> Dict[str, List[str]]:
    files = {}
    for name in class_names:
        images = _images(os.path.join(root, name), ignored)
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
        self._ignored = ignored = _Ignored()
        top = _subdirs(directory)
        split_dirs = "train" in top
        if split_dirs:
            _subdirs(directory, ignored, beside="train/ and validation/")
            for name in top:
                if name not in ("train",) + _VALIDATION_DIRS:
                    ignored.add("folder(s) beside train/ and validation/ (not read)", os.path.join(directory, name))
        train_root = os.path.join(directory, "train") if split_dirs else directory
        class_names = _subdirs(train_root, ignored)
        if len(class_names) < 2:
            raise ValueError(
                f"folder: {train_root!r} has {len(class_names)} class sub-folder(s) "
                f"{class_names}; need at least 2 (one sub-folder of images per class)")
        super().__init__(f"folder:{directory}", len(class_names), class_names)
        train = _scan(train_root, class_names, ignored)
        self._split_files: Dict[str, List[Tuple[str, int]]] = {}
        if split_dirs:
            self._split_files[TRAIN] = [(f, i) for i, c in enumerate(class_names) for f in train[c]]
            val_name = next((d for d in _VALIDATION_DIRS if d in top), None)
            if val_name is not None:
                val_root = os.path.join(directory, val_name)
                val_classes = _subdirs(val_root, ignored)
                unknown = sorted(set(val_classes) - set(class_names))
                if unknown:
                    raise ValueError(
                        f"folder: {val_root!r} has classes {unknown} that are not in "
                        f"{train_root!r} (known classes: {class_names})")
                val = _scan(val_root, val_classes, ignored)
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

    def scan_report(self) -> List[str]:
        """Console lines: the files used per split, those ignored and why, and how many sampled
        JPEGs are stored rotated (EXIF orientation, not applied)."""
        used = ", ".join(f"{split} {len(files):,}" for split, files in self._split_files.items())
        lines = [f"Folder {self.directory}: {self.num_classes} classes; images used: {used}"]
        ignored = self._ignored.summary(self.directory)
        if ignored:
            lines.append("Folder: ignored " + "; ".join(ignored))
        jpegs = [f for files in self._split_files.values() for f, _ in files
                 if f.lower().endswith((".jpg", ".jpeg"))]
        rotated, sampled = rotated_fraction(jpegs[:: max(1, len(jpegs) // EXIF_SAMPLE)][:EXIF_SAMPLE])
        if rotated:
            lines.append(f"Folder: {rotated} of {sampled} sampled JPEGs are stored rotated (EXIF orientation); it is "
                         "not applied in training or serving, so they are used as stored. To use them upright, "
                         "rotate the files once (e.g. `exiftran -ai *.jpg`, or PIL.ImageOps.exif_transpose).")
        return lines

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
