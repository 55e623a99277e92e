"""Runs: where a run directory, the training loop and the exporters meet, and the entry points.

    from effnet_tf import run
    run.Driver(config).run()                              # what effnet-train does
    run.export_from_model_dir("runs/demo")                # latest checkpoint, EMA weights
    model, config, info = run.restore_from_model_dir("runs/demo")

``effnet_tf.run.predict`` is ``effnet-predict``. Submodules load lazily, so the predict CLI
(which only needs TensorFlow to serve a SavedModel) does not pull in the training code.
"""

import importlib

_EXPORTS = {
    "Driver": "effnet_tf.run.driver",
    "export_from_model_dir": "effnet_tf.run.restore",
    "restore_from_model_dir": "effnet_tf.run.restore",
    "load_config": "effnet_tf.run.restore",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'effnet_tf.run' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
