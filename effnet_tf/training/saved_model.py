"""End-of-training SavedModel export with the EMA weights (a minimal serving artifact;
``effnet_tf.export`` provides the full one with all signatures)."""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from effnet_tf.training.optimizer import ema_weights


def export_saved_model(
    model: keras.Model,
    path: str,
    *,
    image_size: Optional[int] = None,
    use_ema: bool = True,
    options: Optional[tf.saved_model.SaveOptions] = None,
) -> str:
    """Writes ``model`` as a TF SavedModel at ``path`` with a ``serve`` endpoint.

    The endpoint takes float32 pixels 0..255 ``[batch, size, size, 3]`` (``size`` fixed when
    ``image_size`` is given, else any) and returns ``{"logits", "probabilities"}``. The EMA
    weights are exported when the model's optimizer keeps them and ``use_ema`` is set; the
    trained weights are put back afterwards.
    """
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")

    with ema_weights(model, enabled=use_ema):
        archive = keras.export.ExportArchive()
        archive.track(model)

        def serve(images):
            logits = tf.cast(model(images, training=False), tf.float32)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

        archive.add_endpoint("serve", serve, input_signature=[spec])
        # Variables are written with their values now, i.e. the EMA ones.
        archive.write_out(path, options=options, verbose=False)
    return path
