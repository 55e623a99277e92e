"""Export: SavedModel with serving signatures, ``.keras``, TFLite and ONNX, from a Keras model.

    from effnet_tf import export
    export.export_all(model, "exports/flowers")                  # saved_model/, model.keras, *.tflite
    export.export_saved_model(model, "exports/sm", image_size=224, class_names=names)
    export.export_keras(model, "model.keras")
    export.export_tflite(model, "model.tflite", image_size=224, quantize="dynamic_range")
    print(export.format_report(export.read_metadata("exports/flowers")["report"]))  # size, latency, agreement

Exporting a training run's checkpoint (``export_from_model_dir``) is ``effnet_tf.run``'s job:
this package knows Keras models, not runs. See docs/export.md. Submodules load lazily, so
reading ``effnet_tf.export.layout`` does not pull in the exporters.
"""

import importlib

_EXPORTS = {
    "export_saved_model": "effnet_tf.export.saved_model",
    "export_keras": "effnet_tf.export.keras_file",
    "export_tflite": "effnet_tf.export.tflite",
    "export_all": "effnet_tf.export.bundle",
    "read_metadata": "effnet_tf.export.bundle",
    "format_report": "effnet_tf.export.report",
    "atomic_output": "effnet_tf.export.atomic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'effnet_tf.export' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
