"""MixUp / CutMix: label sums, image/label consistency, dtypes."""
import numpy as np
import pytest
import tensorflow as tf

from effnet_tf.data.mixing import cutmix, mix_batch, mixup, sample_beta

B, H, W, K = 8, 16, 12, 10


def batch():
    # Each example is a constant image with a distinct value, and a distinct class.
    values = np.arange(B, dtype=np.float32) * 20 + 10
    images = np.broadcast_to(values[:, None, None, None], (B, H, W, 3)).astype(np.uint8)
    labels = tf.one_hot(np.arange(B), K)
    return tf.constant(images), labels, values


@pytest.mark.parametrize("alpha", (0.2, 1.0, 5.0))
def test_mixup_labels_match_images(alpha):
    images, labels, values = batch()
    out, soft = mixup(images, labels, alpha, tf.constant([3, 4], tf.int64))
    soft = soft.numpy()
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
    for i in range(B):
        partner = B - 1 - i
        lam = soft[i, i] if i != partner else 1.0
        expected = lam * values[i] + (1 - lam) * values[partner]
        np.testing.assert_allclose(out[i].numpy(), expected, rtol=1e-5)
        assert set(np.nonzero(soft[i])[0]) <= {i, partner}


@pytest.mark.parametrize("alpha", (0.3, 1.0))
def test_cutmix_labels_are_pasted_area(alpha):
    images, labels, values = batch()
    out, soft = cutmix(images, labels, alpha, tf.constant([5, 6], tf.int64))
    out, soft = out.numpy(), soft.numpy()
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
    for i in range(B):
        partner = B - 1 - i
        pasted = np.mean(out[i, ..., 0] == values[partner])
        np.testing.assert_allclose(soft[i, partner], pasted, atol=1e-6)
        np.testing.assert_allclose(soft[i, i], 1 - pasted, atol=1e-6)
        region = np.argwhere(out[i, ..., 0] == values[partner])
        if len(region):  # the pasted pixels form one rectangle
            extent = region.max(0) - region.min(0) + 1
            assert len(region) == extent[0] * extent[1]


def test_mix_batch_half_and_half_bfloat16():
    images, labels, _ = batch()
    out, soft = mix_batch(images, labels, 0.5, 1.0, tf.constant([1, 1], tf.int64))
    assert out.dtype == tf.bfloat16 and soft.dtype == tf.float32
    np.testing.assert_allclose(soft.numpy().sum(1), 1.0, atol=1e-6)
    # First half mixed among itself (mixup), second half among itself (cutmix).
    assert np.all(soft.numpy()[: B // 2, B // 2:] == 0)
    assert np.all(soft.numpy()[B // 2:, : B // 2] == 0)
    assert float(tf.reduce_max(tf.cast(out, tf.float32))) <= 255.0


def test_alpha_zero_is_identity_and_negative_rejected():
    images, labels, _ = batch()
    out, soft = mixup(images, labels, 0.0, [1, 2])
    np.testing.assert_array_equal(out.numpy(), images.numpy().astype(np.float32))
    np.testing.assert_array_equal(soft, labels)
    with pytest.raises(ValueError, match="mixup_alpha"):
        mixup(images, labels, -0.1, [1, 2])
    with pytest.raises(ValueError, match="cutmix_alpha"):
        cutmix(images, labels, "a", [1, 2])


def test_sample_beta_mean_and_range():
    x = sample_beta([4000], 0.4, tf.constant([9, 9], tf.int64)).numpy()
    assert x.min() >= 0 and x.max() <= 1
    assert abs(x.mean() - 0.5) < 0.03
    # Beta(0.4, 0.4) is U-shaped: most mass near the ends.
    assert np.mean((x < 0.1) | (x > 0.9)) > 0.4
