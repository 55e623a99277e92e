"""The serving functions of an exported classifier: what a client sends in, what it gets back.

``serving_default`` takes a batch of encoded image strings (JPEG, PNG, GIF, BMP, WebP, JPEG XL) (``image_bytes``, shape [N]),
checks each one's magic bytes (so a bad element is named in the error), decodes it and applies
the input pipeline's own evaluation preprocessing (``effnet_tf.data.preprocessing.
preprocess_eval``: the run's central crop, ``crop_fraction`` of the shorter side -- by default
the official ``size/(size+32)`` below 320 px, else the whole image -- resized to ``size x size``). ``predict_pixels`` (float32) and ``predict_pixels_uint8`` take pixels
``[N, H, W, 3]`` in 0..255 at any size and run the model on them as they are (no crop or
resize: the model is fully convolutional and normalizes its input itself).

All return ``probabilities`` [N, classes], ``top_k_indices`` [N, k] (int32), ``top_k_scores``
[N, k] and ``top_k_labels`` [N, k] (class names, or the indices as strings). The model always
runs with ``training=False``; the traced graphs hold only TensorFlow ops, so the SavedModel
loads without effnet_tf.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from effnet_tf.data.image_formats import FORMAT_NAMES, is_image_tensor

SERVING_DEFAULT = "serving_default"
PREDICT_PIXELS = "predict_pixels"
PREDICT_PIXELS_UINT8 = "predict_pixels_uint8"
SIGNATURES = (SERVING_DEFAULT, PREDICT_PIXELS, PREDICT_PIXELS_UINT8)
IMAGE_BYTES = "image_bytes"
PIXELS = "pixels"
OUTPUTS = ("probabilities", "top_k_indices", "top_k_scores", "top_k_labels")


# Model heads and what their outputs are.
_LOGITS_ACTIVATIONS = (None, "linear")
_SCORE_ACTIVATIONS = ("softmax", "sigmoid")


def head_activation(model: keras.Model) -> Optional[str]:
    """The classifier activation of ``model``: ``None``/"linear" (logits), "softmax" or "sigmoid"."""
    if hasattr(model, "classifier_activation"):
        activation = model.classifier_activation
    else:  # a plain Keras classifier: look at the last layer
        activation = getattr(model.layers[-1], "activation", None)
        activation = None if activation is None else keras.activations.serialize(activation)
    if isinstance(activation, dict):
        activation = activation.get("config", activation.get("class_name"))
    if activation not in _LOGITS_ACTIVATIONS + _SCORE_ACTIVATIONS:
        raise ValueError(
            f"Cannot export a classifier whose last activation is {activation!r}: the serving "
            f"signatures need logits (None/'linear') or scores ('softmax', 'sigmoid')."
        )
    return activation


def _shape_check(x, rank: int):
    """``(rank == rank(x), x's shape padded to ``rank`` entries)``, computed at run time.

    Signatures do not check what they are fed (a rank-3 batch reaches the convolutions and can
    abort the process), and Grappler folds ``tf.rank``/``tf.size(tf.shape)`` from the declared
    shape, so the rank is read from the padded shape vector instead: its entry ``rank`` is the
    -1 padding exactly when ``x`` has ``rank`` dimensions.
    """
    padded = tf.concat([tf.shape(x), tf.fill([rank + 1], -1)], axis=0)
    has_rank = tf.logical_and(tf.reduce_all(padded[:rank] >= 0), tf.equal(padded[rank], -1))
    return has_rank, padded[:rank]


def _checked(x, ok, message):
    """``x``, passed through a ``tf.cond`` on ``ok`` whose other branch raises ``message``.

    A data dependency, not a control dependency: Grappler may drop a no-op reshape or identity
    that carries an assertion, but nothing downstream can run before the cond has decided.
    """
    def fail():
        with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
            return tf.identity(x)

    return tf.cond(ok, lambda: tf.identity(x), fail)


def check_pixels(pixels):
    """Asserts ``pixels`` is ``[N, H, W, 3]`` with H, W >= 1 (a clear error, not a crash)."""
    has_rank, dims = _shape_check(pixels, 4)
    ok = tf.logical_and(has_rank, tf.equal(dims[3], 3))
    ok = tf.logical_and(ok, tf.reduce_all(dims[1:3] >= 1))
    message = tf.strings.format(
        "pixels must be a batch of RGB images [N, H, W, 3] (H, W >= 1; uint8 or float32 values "
        "0..255), got shape {}", tf.shape(pixels), summarize=-1)
    return tf.ensure_shape(_checked(pixels, ok, message), [None, None, None, 3])


def _check_one_image(index, encoded):
    message = tf.strings.format(
        "element {} of image_bytes is not an image in a format the model reads (" + FORMAT_NAMES + ", "
        "told apart by their first bytes; it is {} bytes long)", (index, tf.strings.length(encoded)))
    return _checked(encoded, is_image_tensor(encoded), message)


def decode_images(image_bytes, image_size: int, crop_fraction=None):
    """Encoded image strings [N] -> uint8 [N, size, size, 3] with the eval preprocessing
    (``crop_fraction`` as ``preprocess_eval``)."""
    from effnet_tf.data.preprocessing import preprocess_eval

    has_rank, _ = _shape_check(image_bytes, 1)
    message = tf.strings.format(
        "image_bytes must be a 1-D batch [N] of encoded image strings, got shape {}",
        tf.shape(image_bytes), summarize=-1)
    image_bytes = tf.ensure_shape(_checked(image_bytes, has_rank, message), [None])

    def one(args):
        index, encoded = args
        return preprocess_eval(_check_one_image(index, encoded), image_size, encoded=True,
                               crop_fraction=crop_fraction)

    count = tf.shape(image_bytes)[0]
    return tf.map_fn(
        one, (tf.range(count), image_bytes),
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8),
    )


def classify(scores, top_k: int, class_names: Optional[Sequence[str]] = None) -> Dict[str, tf.Tensor]:
    """The signature outputs of probabilities ``scores`` [N, classes]."""
    top_scores, top_indices = tf.math.top_k(scores, k=top_k)
    if class_names:
        labels = tf.gather(tf.constant(list(class_names), tf.string), top_indices)
    else:
        labels = tf.strings.as_string(top_indices)
    return {
        "probabilities": scores,
        "top_k_indices": top_indices,
        "top_k_scores": top_scores,
        "top_k_labels": labels,
    }


def model_scores(model: keras.Model) -> Callable:
    """``pixels -> probabilities`` (float32) of ``model`` at inference (``training=False``)."""
    activation = head_activation(model)

    def scores(pixels):
        outputs = tf.cast(model(pixels, training=False), tf.float32)
        return tf.nn.softmax(outputs, axis=-1) if activation in _LOGITS_ACTIVATIONS else outputs

    return scores


def serving_functions(
    model: keras.Model,
    image_size: int,
    class_names: Optional[Sequence[str]] = None,
    top_k: int = 5,
    crop_fraction: Optional[float] = None,
) -> Dict[str, Tuple[Callable, List[tf.TensorSpec]]]:
    """``{signature name: (function, input_signature)}`` for ``keras.export.ExportArchive``
    (``crop_fraction``: ``serving_default``'s central crop, as ``preprocess_eval``)."""
    model_probabilities = model_scores(model)

    def scores(pixels):
        # An empty batch runs the model on one zero image instead (some CPU kernels reject
        # zero-sized convolutions), sliced away after. Padding rather than a tf.cond around the
        # model: inside a cond the kernels reach the convolutions as function arguments, which
        # hides their shapes from converters (tf2onnx failed with "object of type 'NoneType'
        # has no len()" in conv_kernel_shape).
        count = tf.shape(pixels)[0]
        spatial = tf.shape(pixels)[1:3]
        filler = tf.zeros(tf.concat([[tf.maximum(1 - count, 0)], spatial, [3]], axis=0), pixels.dtype)
        return model_probabilities(tf.concat([pixels, filler], axis=0))[:count]

    def serve_image_bytes(image_bytes):
        return classify(scores(decode_images(image_bytes, image_size, crop_fraction)), top_k, class_names)

    def serve_pixels(pixels):
        return classify(scores(check_pixels(pixels)), top_k, class_names)

    return {
        SERVING_DEFAULT: (serve_image_bytes, [tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)]),
        PREDICT_PIXELS: (serve_pixels, [tf.TensorSpec([None, None, None, 3], tf.float32, name=PIXELS)]),
        PREDICT_PIXELS_UINT8: (serve_pixels, [tf.TensorSpec([None, None, None, 3], tf.uint8, name=PIXELS)]),
    }
