"""The evaluation crop as a fraction of the shorter side (1 = the whole image), the training crop's
fallback to it, and the flip probability: against hand-computed windows and TF's own resize."""
import numpy as np
import pytest
import tensorflow as tf

from effnet_tf.data import preprocessing


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _resized(patch, size):
    out = tf.image.resize(patch.astype(np.float32), [size, size], method="bilinear").numpy()
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("encoded", [False, True])
@pytest.mark.parametrize("fraction", [None, 1.0, 0.5, 0.9])
def test_eval_crop_fraction_against_a_hand_computed_window(encoded, fraction):
    image, size = _image(30, 40), 24
    source = tf.io.encode_png(image).numpy() if encoded else tf.constant(image)
    out = preprocessing.preprocess_eval(source, size, encoded=encoded, crop_fraction=fraction).numpy()
    if fraction == 1.0:  # the whole image, not its central square
        expected = _resized(image, size)
    else:
        f = size / (size + 32) if fraction is None else fraction
        crop = int(f * 30)
        oy, ox = (30 - crop + 1) // 2, (40 - crop + 1) // 2
        expected = _resized(image[oy:oy + crop, ox:ox + crop], size)
    np.testing.assert_array_equal(out, expected)


def test_official_fraction_below_and_above_320_px():
    assert preprocessing.official_crop_fraction(224) == pytest.approx(0.875)
    assert preprocessing.official_crop_fraction(64) == pytest.approx(64 / 96)
    assert preprocessing.official_crop_fraction(384) == 1.0


@pytest.mark.parametrize("bad", [0.0, 1.5, -1, "half", True])
def test_bad_fraction_is_named(bad):
    with pytest.raises(ValueError, match="crop_fraction"):
        preprocessing.preprocess_eval(tf.constant(_image(8, 8)), 8, encoded=False, crop_fraction=bad)


@pytest.mark.parametrize("fraction", [1.0, 0.75])
def test_training_without_crops_falls_back_to_the_evaluation_view(fraction):
    # area_range (1, 1) never samples a crop: the fallback is the run's eval window, and with
    # flip 0 the training image equals the evaluation image exactly.
    image, size = _image(30, 40, seed=1), 24
    train = preprocessing.preprocess_train(tf.constant(image), size, tf.constant([3, 4], tf.int64), encoded=False,
                                           area_range=(1.0, 1.0), flip=0.0, crop_fraction=fraction)
    evaluation = preprocessing.preprocess_eval(tf.constant(image), size, encoded=False, crop_fraction=fraction)
    np.testing.assert_array_equal(train.numpy(), evaluation.numpy())


def test_official_fallback_is_the_official_centre_crop_at_every_size():
    # crop_fraction None: size/(size+32) even above 320 px, as the official code's fallback.
    image, size = _image(400, 400, seed=2), 352
    train = preprocessing.preprocess_train(tf.constant(image), size, tf.constant([3, 4], tf.int64), encoded=False,
                                           area_range=(1.0, 1.0), flip=0.0)
    crop = int(size / (size + 32) * 400)
    o = (400 - crop + 1) // 2
    np.testing.assert_array_equal(train.numpy(), _resized(image[o:o + crop, o:o + crop], size))


@pytest.mark.parametrize("probability", [0.0, 0.1, 0.5, 1.0])
def test_flip_probability(probability):
    image = _image(16, 16, seed=3)
    flips = 0
    for i in range(400):
        out = preprocessing.preprocess_train(tf.constant(image), 16, tf.constant([i, 7], tf.int64), encoded=False,
                                             area_range=(1.0, 1.0), flip=probability, crop_fraction=1.0).numpy()
        same, mirrored = np.array_equal(out, image), np.array_equal(out, image[:, ::-1])
        assert same or mirrored
        flips += mirrored
    assert abs(flips / 400 - probability) <= 0.1  # 4 standard deviations at 0.5
