"""The export report: what each exported file costs and how close it stays to the float model.

For every file ``export_all`` wrote: its size, the runtime that runs it (TensorFlow for the
SavedModel, Keras for ``.keras``, LiteRT for ``.tflite``, ONNX Runtime for ``.onnx``), its
single-image CPU latency there, and its top-1 agreement and largest probability difference with
the float Keras model on the check images (the calibration images, else seeded random pixels).
Parameters and multiply-adds at the export size are the model's. ``metadata.json`` stores the
report under ``report``; ``format_report`` prints it as a table.

Multiply-adds count the convolutions, depthwise convolutions and matrix products of one image
(what the EfficientNet papers call FLOPs: 0.39B for B0 at 224 px); BatchNorm, activations and
the elementwise products are left out, as there.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from effnet_tf import keras_internals
from effnet_tf.export.layout import KERAS_FILE
from effnet_tf.export.signatures import PIXELS, PREDICT_PIXELS, model_scores
from effnet_tf.storage.paths import join

LATENCY_REPEATS = 10       # timed single-image calls per file (after one warm-up call)
LATENCY_BUDGET_S = 2.0     # ... or fewer, once this much time is spent


def multiply_adds(model: keras.Model, image_size: int) -> int:
    """Multiply-adds of one ``image_size`` x ``image_size`` image through ``model`` (see the module doc)."""
    function = tf.function(lambda pixels: model(pixels, training=False))
    return _graph_multiply_adds(
        function.get_concrete_function(tf.TensorSpec([1, image_size, image_size, 3], tf.float32)).graph)


def _graph_multiply_adds(graph: tf.Graph) -> int:
    total = 0
    for op in graph.get_operations():
        if op.type in ("Conv2D", "DepthwiseConv2dNative"):
            # kernel [kh, kw, in / groups, out] or, depthwise, [kh, kw, in, multiplier]
            total += int(np.prod(op.outputs[0].shape.as_list()[1:3])) * int(np.prod(op.inputs[1].shape.as_list()))
        elif op.type == "MatMul":  # [batch, a] x [a, b]
            total += int(np.prod(op.inputs[1].shape.as_list()))
        else:  # e.g. Keras runs a grouped convolution as its own (XLA-compiled) function
            total += sum(_graph_multiply_adds(called) for called in keras_internals.called_graphs(graph, op))
    return total


def file_bytes(path: str) -> int:
    """The size of a file, or of everything under a directory."""
    if not tf.io.gfile.isdir(path):
        return int(tf.io.gfile.stat(path).length)
    return sum(int(tf.io.gfile.stat(join(directory, name)).length)
               for directory, _, names in tf.io.gfile.walk(path) for name in names)


def median_latency_ms(call: Callable[[np.ndarray], Any], image: np.ndarray,
                      repeats: int = LATENCY_REPEATS, budget_s: float = LATENCY_BUDGET_S) -> float:
    """Median wall time of ``call(image)`` in milliseconds, after one untimed warm-up call."""
    call(image)
    times = []
    started = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - started < budget_s):
        start = time.perf_counter()
        call(image)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def _read(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as handle:
        return handle.read()


def _saved_model_runner(path: str, scratch: str):
    signature = tf.saved_model.load(path).signatures[PREDICT_PIXELS]
    return (lambda pixels: signature(**{PIXELS: tf.constant(pixels, tf.float32)})["probabilities"].numpy(),
            f"TensorFlow {tf.__version__}")


def _keras_runner(path: str, scratch: str):
    local = os.path.join(scratch, KERAS_FILE)  # Keras reads local files; the export may be on gs://
    tf.io.gfile.copy(path, local, overwrite=True)
    scores = tf.function(model_scores(keras.saving.load_model(local)))
    return lambda pixels: scores(tf.constant(pixels, tf.float32)).numpy(), f"Keras {keras.__version__}"


def _tflite_runner(path: str, scratch: str):
    from effnet_tf.export.tflite_runtime import TFLiteClassifier, runtime_name

    return TFLiteClassifier(model_content=_read(path)), runtime_name()


def _onnx_runner(path: str, scratch: str):
    import onnxruntime

    session = onnxruntime.InferenceSession(_read(path), providers=["CPUExecutionProvider"])
    return (lambda pixels: session.run(["probabilities"], {PIXELS: pixels.astype(np.float32)})[0],
            f"ONNX Runtime {onnxruntime.__version__}")


def _runner_for(file_key: str):
    if file_key == "saved_model":
        return _saved_model_runner
    if file_key == "keras":
        return _keras_runner
    if file_key.startswith("tflite_"):
        return _tflite_runner
    if file_key == "onnx":
        return _onnx_runner
    raise ValueError(f"no runtime known for exported file {file_key!r}.")


def build_report(directory: str, files: Dict[str, str], model: keras.Model, image_size: int,
                 images: np.ndarray, progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """The report of the export in ``directory`` (``files``: ``metadata.json``'s ``{key: relative
    path}``), checked against ``model`` (float32, what was exported) on ``images`` (float32 pixels
    ``[N, image_size, image_size, 3]``)."""
    images = np.asarray(images, np.float32)
    reference = model_scores(model)(tf.constant(images)).numpy()
    report: Dict[str, Any] = {
        "image_size": image_size,
        "parameters": int(model.count_params()),
        "multiply_adds": multiply_adds(model, image_size),
        "check_images": int(len(images)),
        "latency": f"median of up to {LATENCY_REPEATS} single-image calls on the CPU, after one warm-up",
        "files": {},
    }
    with tempfile.TemporaryDirectory(prefix="effnet_report_") as scratch:
        for key, relative in files.items():
            if progress is not None:
                progress(key)
            path = join(directory, relative)
            run, runtime = _runner_for(key)(path, scratch)
            probabilities = np.concatenate([run(images[i:i + 1]) for i in range(len(images))])
            report["files"][key] = {
                "file": relative,
                "bytes": file_bytes(path),
                "runtime": runtime,
                "latency_ms": round(median_latency_ms(run, images[:1]), 3),
                "top1_agreement": round(float((probabilities.argmax(1) == reference.argmax(1)).mean()), 4),
                "max_abs_difference": float(np.abs(probabilities - reference).max()),
            }
    return report


def format_report(report: Dict[str, Any]) -> str:
    """The report as a text table (what the export prints)."""
    macs = report["multiply_adds"]
    macs_text = f"{macs / 1e9:.3g}B" if macs >= 1e9 else f"{macs / 1e6:.3g}M"
    images = report.get("check_images_are") or f"{report['check_images']} images"
    lines = [f"Export report: {report['parameters']:,} parameters, {macs_text} multiply-adds at "
             f"{report['image_size']} px; agreement with the float model on {images}",
             f"  {'file':<28} {'size':>10} {'ms/image':>9} {'top-1 agr.':>10} {'max |dp|':>9}  runtime"]
    for entry in report["files"].values():
        lines.append(f"  {entry['file']:<28} {entry['bytes'] / 2**20:>8.2f} MB {entry['latency_ms']:>9.2f} "
                     f"{100 * entry['top1_agreement']:>9.1f}% {entry['max_abs_difference']:>9.2g}  {entry['runtime']}")
    return "\n".join(lines)
