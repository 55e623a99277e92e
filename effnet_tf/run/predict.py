"""``effnet-predict``: classify image files with an exported model.

    effnet-predict --model=exports/flowers photo.jpg more_photos/
    effnet-predict --model=runs/demo --json --top_k=3 photo.png

``--model`` is a SavedModel directory, an ``export_all`` directory (with ``saved_model/``), a
training ``model_dir`` (its ``export/saved_model`` when present, else its latest checkpoint is
exported on the fly, EMA weights, into a temporary directory), or a ``.tflite`` file of an
export. Serving a SavedModel needs TensorFlow only (``tf.saved_model.load``); the images go
through the model's own ``serving_default`` signature (decode, central crop/resize at the eval
size). A ``.tflite`` file runs in LiteRT (``tf.lite`` without it) on the same preprocessing,
with the class names and crop of the ``metadata.json`` beside it.

Files that are not images (JPEG, PNG, GIF, BMP, WebP, JPEG XL), or that fail to decode, are
reported per file; the others are still classified. Exit status: 0 all classified, 1 some files failed, 2 usage/model errors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from effnet_tf.export.layout import METADATA_FILE, SAVED_MODEL_DIR  # noqa: E402
from effnet_tf.data.image_formats import FORMAT_NAMES, IMAGE_EXTENSIONS, looks_like_image  # noqa: E402  (TF only)
from effnet_tf.storage.paths import join  # noqa: E402
from effnet_tf.storage.run_directory import RunDirectory  # noqa: E402

SAVED_MODEL_FILE = "saved_model.pb"
TFLITE_SUFFIX = ".tflite"


class PredictError(Exception):
    """A usage or model problem: reported on one line, exit status 2."""


def _is_saved_model(path: str) -> bool:
    return tf.io.gfile.exists(join(path, SAVED_MODEL_FILE))


def _note(message: str) -> None:
    print(f"effnet-predict: {message}", file=sys.stderr, flush=True)


def resolve_model(path: str, checkpoint: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """``(saved_model_dir or .tflite file, temporary_dir_to_delete_or_None)`` for ``--model=path``."""
    if not tf.io.gfile.exists(path):
        raise PredictError(f"--model {path!r} does not exist.")
    if path.endswith(TFLITE_SUFFIX) and not tf.io.gfile.isdir(path):
        if checkpoint is not None:
            raise PredictError("--checkpoint needs a training model_dir, not a .tflite file.")
        return path, None
    run_dir = RunDirectory(path)
    if checkpoint is None:
        in_run = join(run_dir.export, SAVED_MODEL_DIR)
        for candidate in (path, join(path, SAVED_MODEL_DIR), in_run):
            if _is_saved_model(candidate):
                if candidate == in_run:
                    _warn_if_stale(run_dir, candidate)
                return candidate, None
    if not run_dir.is_run():
        raise PredictError(
            f"--model {path!r} holds no SavedModel ({SAVED_MODEL_FILE}, {SAVED_MODEL_DIR}/ or "
            f"{RunDirectory.EXPORT}/{SAVED_MODEL_DIR}/) and is not a training model_dir "
            f"({RunDirectory.CONFIG_FILE}, {RunDirectory.CHECKPOINTS}/).")
    from effnet_tf.run.restore import export_from_model_dir  # needs the model code

    temporary = tempfile.mkdtemp(prefix="effnet_predict_")
    try:
        _note(f"no export in {path}; exporting its {'checkpoint ' + checkpoint if checkpoint else 'latest checkpoint'} "
              "to a temporary SavedModel")
        export_dir = export_from_model_dir(path, join(temporary, "export"), checkpoint=checkpoint,
                                           formats=("saved_model",), report=False)  # thrown away after
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return join(export_dir, SAVED_MODEL_DIR), temporary


def _warn_if_stale(run_dir: RunDirectory, saved_model_dir: str) -> None:
    """Notes when the run has a newer checkpoint than its export was made from."""
    latest = run_dir.latest_checkpoint()
    if not latest:
        return
    exported = ((_metadata_beside(saved_model_dir) or {}).get("source") or {}).get("checkpoint")
    if exported and os.path.basename(exported) != os.path.basename(latest):
        _note(f"using {saved_model_dir} (from {os.path.basename(exported)}); {run_dir.root} has a newer "
              f"{os.path.basename(latest)}: re-export with `effnet-train --mode=export` to use it")


def collect_files(paths: Sequence[str]) -> List[str]:
    """Image files named on the command line; folders contribute their image files (recursively, sorted)."""
    files: List[str] = []
    for path in paths:
        if tf.io.gfile.isdir(path):
            found = []
            for directory, _, names in tf.io.gfile.walk(path):
                found.extend(join(directory, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise PredictError(f"Folder {path!r} holds no {'/'.join(IMAGE_EXTENSIONS)} files.")
            files.extend(sorted(found))
        elif tf.io.gfile.exists(path):
            files.append(path)
        else:
            raise PredictError(f"Image {path!r} does not exist.")
    if not files:
        raise PredictError("No images given.")
    return files


class Predictor:
    """The ``serving_default`` signature of a SavedModel, applied to encoded images."""

    def __init__(self, saved_model_dir: str):
        self.directory = saved_model_dir
        self.loaded = tf.saved_model.load(saved_model_dir)
        signature = self.loaded.signatures.get("serving_default")
        inputs = signature.structured_input_signature[1] if signature is not None else {}
        if "image_bytes" not in inputs:
            raise PredictError(f"{saved_model_dir} is not an effnet_tf export: its serving_default does not "
                               "take image_bytes.")
        self.signature = signature
        self.exported_k = int(signature.structured_outputs["top_k_indices"].shape[-1])
        self.class_names = self._class_names()

    def _class_names(self) -> Optional[List[str]]:
        return (_metadata_beside(self.directory) or {}).get("class_names")

    def __call__(self, encoded: Sequence[bytes], top_k: int) -> List[List[Dict]]:
        """Top-``top_k`` ``{"label", "index", "score"}`` of each encoded image (raises on bad input)."""
        outputs = self.signature(image_bytes=tf.constant(list(encoded), tf.string))
        if top_k <= self.exported_k:
            return _rows(outputs["top_k_labels"].numpy()[:, :top_k], outputs["top_k_indices"].numpy()[:, :top_k],
                         outputs["top_k_scores"].numpy()[:, :top_k])
        return _top_k_rows(outputs["probabilities"].numpy(), top_k, self.class_names)


def _metadata_beside(path: str) -> Optional[Dict]:
    """The ``metadata.json`` of the export that holds ``path`` (a SavedModel dir or a file)."""
    metadata_path = join(os.path.dirname(path.rstrip("/")), METADATA_FILE)
    if not tf.io.gfile.exists(metadata_path):
        return None
    with tf.io.gfile.GFile(metadata_path) as handle:
        return json.load(handle)


def _rows(labels, indices, scores) -> List[List[Dict]]:
    return [
        [{"label": (label.decode("utf-8") if isinstance(label, bytes) else str(label)),
          "index": int(index), "score": float(score)}
         for label, index, score in zip(row_labels, row_indices, row_scores)]
        for row_labels, row_indices, row_scores in zip(labels, indices, scores)
    ]


def _top_k_rows(probabilities: np.ndarray, top_k: int, names: Optional[List[str]]) -> List[List[Dict]]:
    indices = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    scores = np.take_along_axis(probabilities, indices, axis=1)
    labels = np.vectorize(lambda i: names[i] if names else str(i), otypes=[object])(indices)
    return _rows(labels, indices, scores)


class TFLitePredictor:
    """A ``.tflite`` file of an export, in LiteRT: images decoded and center-cropped/resized as
    ``serving_default`` does (the crop from ``metadata.json``, else the official one), then run."""

    def __init__(self, path: str):
        from effnet_tf.data.preprocessing import preprocess_eval
        from effnet_tf.export.tflite_runtime import TFLiteClassifier

        with tf.io.gfile.GFile(path, "rb") as handle:
            try:
                self.classifier = TFLiteClassifier(model_content=handle.read())
            except ValueError as error:
                raise PredictError(f"--model {path!r} is not a TFLite model LiteRT can load: {error}") from None
        metadata = _metadata_beside(path) or {}
        self.size = self.classifier.image_size
        self.crop_fraction = metadata.get("crop_fraction") if metadata.get("image_size") == self.size else None
        self.class_names = metadata.get("class_names")
        self._preprocess = lambda data: preprocess_eval(tf.constant(data), self.size, encoded=True,
                                                        crop_fraction=self.crop_fraction)

    def __call__(self, encoded: Sequence[bytes], top_k: int) -> List[List[Dict]]:
        pixels = np.stack([self._preprocess(data).numpy() for data in encoded]).astype(np.float32)
        return _top_k_rows(self.classifier(pixels), top_k, self.class_names)


def _error_text(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:  # TF wraps the useful line in "Graph execution error" boilerplate
        if line.startswith("assertion failed:") or "Invalid" in line or "invalid" in line:
            return line
    return lines[-1] if lines else type(error).__name__


def predict_files(predictor: Predictor, files: Sequence[str], top_k: int, batch_size: int) -> List[Dict]:
    """One result per file: ``{"file", "predictions"}`` or ``{"file", "error"}``."""
    results: Dict[str, Dict] = {}
    good: List[Tuple[str, bytes]] = []
    for path in files:
        with tf.io.gfile.GFile(path, "rb") as handle:
            data = handle.read()
        if looks_like_image(data):
            good.append((path, data))
        else:
            results[path] = {"file": path, "error": f"not an image ({FORMAT_NAMES})"}
    for start in range(0, len(good), batch_size):
        batch = good[start:start + batch_size]
        try:
            rows = predictor([data for _, data in batch], top_k)
        except tf.errors.InvalidArgumentError:
            # A file with a valid header failed to decode: retry one by one to name it.
            rows = []
            for path, data in batch:
                try:
                    rows.extend(predictor([data], top_k))
                except tf.errors.InvalidArgumentError as error:
                    rows.append(error)
        for (path, _), row in zip(batch, rows):
            if isinstance(row, Exception):
                results[path] = {"file": path, "error": f"cannot decode: {_error_text(row)}"}
            else:
                results[path] = {"file": path, "predictions": row}
    return [results[path] for path in files]


def format_text(results: Sequence[Dict]) -> str:
    lines = []
    for result in results:
        lines.append(result["file"])
        if "error" in result:
            lines.append(f"  error: {result['error']}")
            continue
        width = max(len(p["label"]) for p in result["predictions"])
        for rank, p in enumerate(result["predictions"], 1):
            lines.append(f"  {rank}. {p['label']:<{width}}  {p['score']:.4f}")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="effnet-predict",
        description="Classify images (JPEG, PNG, GIF, BMP, WebP, JPEG XL) with an exported effnet_tf model "
                    "(top-k class names and scores).")
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--model", required=True,
                        help="SavedModel dir, export dir (with saved_model/), training model_dir, or a .tflite file")
    parser.add_argument("--checkpoint", default=None,
                        help="with a training model_dir: export this checkpoint prefix instead of using export/")
    parser.add_argument("--top_k", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--batch_size", type=int, default=16, help="images per call (default 16)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top_k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = parse_args(argv)
    temporary = None
    try:
        files = collect_files(args.images)
        model_path, temporary = resolve_model(args.model, args.checkpoint)
        predictor = TFLitePredictor(model_path) if model_path.endswith(TFLITE_SUFFIX) else Predictor(model_path)
        results = predict_files(predictor, files, args.top_k, args.batch_size)
    except (PredictError, FileNotFoundError, ValueError) as error:
        print(f"effnet-predict: error: {error}", file=sys.stderr, flush=True)
        return 2
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    if args.json:
        print(json.dumps({"model": args.model, "results": results}, indent=2))
    else:
        print(format_text(results))
    return 1 if any("error" in r for r in results) else 0


def run() -> None:
    """Console-script entry point (``effnet-predict``)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
