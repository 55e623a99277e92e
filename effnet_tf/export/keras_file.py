"""``.keras`` export: the model (architecture + weights, no optimizer) for fine-tuning elsewhere.

Loads with ``keras.saving.load_model(path)`` in safe mode once ``effnet_tf`` is imported (its
layers are registered under the package name ``effnet_tf``).
"""

from __future__ import annotations

import keras

from effnet_tf.export import prepare
from effnet_tf.export.atomic import atomic_output

KERAS_SUFFIX = ".keras"


def write_keras(model: keras.Model, path: str) -> str:
    """Saves ``model`` at ``path`` directly (not atomic)."""
    model.save(path)
    return path


def export_keras(model: keras.Model, path: str, overwrite: bool = False) -> str:
    """Writes ``model`` (float32, uncompiled, its current weights) to the ``.keras`` file ``path``.

    The file is written beside ``path`` and renamed onto it; an existing ``path`` is refused
    unless ``overwrite``. Returns ``path``.
    """
    if not str(path).endswith(KERAS_SUFFIX):
        raise ValueError(f"A Keras model file must end with {KERAS_SUFFIX!r}, got {path!r}.")
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model, got {type(model).__name__}.")
    copy = prepare.inference_model(model)
    # Keras insists on the .keras suffix, so the temporary file carries it too.
    with atomic_output(path, overwrite=overwrite, suffix=KERAS_SUFFIX) as temporary:
        write_keras(copy, temporary)
    return path
