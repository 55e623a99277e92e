"""RandAugment ops against hand-computed values and PIL (an independent implementation)."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from effnet_tf.data import rand_augment as ra
from effnet_tf.data.rand_augment import OPS, apply_op

MAGNITUDES = (0.0, 2.5, 5.0, 10.0, 25.0)
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def run(name, img, magnitude, seed=(1, 2)):
    out = apply_op(tf.constant(img), name, magnitude, seed)
    assert out.dtype == tf.uint8 and out.shape == img.shape
    return out.numpy()


def test_official_op_list():
    assert OPS == ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                   "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                   "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_invert(image, magnitude):
    np.testing.assert_array_equal(run("Invert", image, magnitude), 255 - image)
    np.testing.assert_array_equal(run("Invert", image, magnitude),
                                  np.asarray(ImageOps.invert(Image.fromarray(image))))


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_solarize(image, magnitude):
    threshold = int(magnitude / 10 * 256)
    expected = np.where(image < threshold, image, 255 - image)
    np.testing.assert_array_equal(run("Solarize", image, magnitude), expected)
    if threshold <= 256:
        pil = ImageOps.solarize(Image.fromarray(image), threshold)
        np.testing.assert_array_equal(run("Solarize", image, magnitude), np.asarray(pil))


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_solarize_add(image, magnitude):
    add = int(magnitude / 10 * 110)
    x = image.astype(np.int32)
    expected = np.where(x < 128, np.minimum(x + add, 255), x)
    np.testing.assert_array_equal(run("SolarizeAdd", image, magnitude), expected)


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_posterize(image, magnitude):
    bits = min(max(int(magnitude / 10 * 4), 0), 8)
    shift = 8 - bits
    expected = ((image.astype(np.int32) >> shift) << shift).astype(np.uint8)
    np.testing.assert_array_equal(run("Posterize", image, magnitude), expected)
    if bits >= 1:
        pil = ImageOps.posterize(Image.fromarray(image), bits)
        np.testing.assert_array_equal(run("Posterize", image, magnitude), np.asarray(pil))


def test_posterize_magnitude_0_is_black_officially(image):
    # Official level-to-arg: int(0 * 4 / 10) = 0 bits kept.
    assert run("Posterize", image, 0).max() == 0


def test_equalize_hand_computed():
    # 256 pixels of 0 and 256 of 100: step = (512 - 256) // 255 = 1, so 100 -> min(256, 255).
    img = np.zeros((16, 32, 3), np.uint8)
    img[:, 16:] = 100
    out = run("Equalize", img, 5)
    np.testing.assert_array_equal(out[:, :16], 0)
    np.testing.assert_array_equal(out[:, 16:], 255)
    # A constant channel (one non-zero bin) is left unchanged.
    flat = np.full((8, 8, 3), 77, np.uint8)
    np.testing.assert_array_equal(run("Equalize", flat, 5), flat)


@pytest.mark.parametrize("magnitude", (0.0, 10.0, 25.0))
def test_equalize_matches_pil(magnitude):
    rng = np.random.default_rng(1)
    # Skewed distributions so equalization changes something.
    img = (rng.beta(2, 5, (40, 30, 3)) * 255).astype(np.uint8)
    expected = np.asarray(ImageOps.equalize(Image.fromarray(img)))
    out = run("Equalize", img, magnitude)
    np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(out, img)


def test_auto_contrast():
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = np.linspace(50, 150, 16).reshape(4, 4).astype(np.uint8)
    img[..., 1] = 7  # constant channel: unchanged
    img[..., 2] = np.arange(16).reshape(4, 4) * 17  # already 0..255: unchanged
    out = run("AutoContrast", img, 3)
    expected_r = ((img[..., 0].astype(np.float64) - 50) * 255 / 100).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected_r)
    np.testing.assert_array_equal(out[..., 1], img[..., 1])
    np.testing.assert_array_equal(out[..., 2], img[..., 2])
    rng = np.random.default_rng(2)
    rnd = rng.integers(30, 200, (20, 20, 3), dtype=np.uint8)
    pil = np.asarray(ImageOps.autocontrast(Image.fromarray(rnd)))
    assert np.abs(run("AutoContrast", rnd, 3).astype(int) - pil).max() <= 1


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_brightness(image, magnitude):
    factor = np.float32(magnitude / 10 * 1.8 + 0.1)
    expected = np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)
    assert np.abs(run("Brightness", image, magnitude).astype(int) - expected).max() <= 1


@pytest.mark.parametrize("name", ("Color", "Contrast", "Brightness", "Sharpness"))
def test_enhance_ops_are_identity_at_magnitude_5(image, name):
    # factor = 1.8 * 5 / 10 + 0.1 = 1.0
    np.testing.assert_array_equal(run(name, image, 5), image)


def test_contrast_hand_computed():
    img = np.full((10, 10, 3), 50, np.uint8)
    img[5:] = 150  # grey mean 100
    out = run("Contrast", img, 10).astype(int)  # factor 1.9: 100 + 1.9 * (x - 100)
    assert np.abs(out[:5] - 5).max() <= 1 and np.abs(out[5:] - 195).max() <= 1
    flat = np.full((6, 6, 3), 90, np.uint8)  # a flat image has no contrast to change
    assert np.abs(run("Contrast", flat, 25).astype(int) - 90).max() <= 1


def test_color_on_grey_and_colour():
    grey = np.repeat(np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5, 1), 3, axis=2)
    assert np.abs(run("Color", grey, 25).astype(int) - grey).max() <= 1
    colourful = np.zeros((4, 4, 3), np.uint8)
    colourful[..., 0] = 200
    out = run("Color", colourful, 0).astype(int)  # factor 0.1: 90% towards grey
    grey_value = 0.2989 * 200
    np.testing.assert_allclose(out[..., 0], grey_value + 0.1 * (200 - grey_value), atol=1.5)
    np.testing.assert_allclose(out[..., 1], 0.9 * grey_value, atol=1.5)


def test_sharpness_hand_computed():
    img = np.zeros((7, 7, 3), np.uint8)
    img[3, 3] = 130
    out = run("Sharpness", img, 0).astype(int)  # factor 0.1
    # Smoothed: centre 130 * 5 / 13 = 50, neighbours 130 / 13 = 10; blend 0.9 smooth + 0.1 x.
    assert out[3, 3, 0] == 58
    assert out[2, 3, 0] == 9 and out[4, 4, 1] == 9
    assert out[0, 0, 0] == 0
    flat = np.full((8, 8, 3), 123, np.uint8)
    np.testing.assert_array_equal(run("Sharpness", flat, 25), flat)


@pytest.mark.parametrize("name", GEOMETRIC + ("Cutout",))
def test_geometric_identity_at_magnitude_0(image, name):
    for seed in ((1, 2), (3, 4), (5, 6)):
        np.testing.assert_array_equal(run(name, image, 0.0, seed), image)


@pytest.mark.parametrize("magnitude,pixels", ((1.0, 10), (0.5, 5), (0.2, 2)))
def test_translate_whole_pixels(image, magnitude, pixels):
    fill = np.full_like(image, 128)
    right = fill.copy()
    right[:, pixels:] = image[:, :-pixels]
    left = fill.copy()
    left[:, :-pixels] = image[:, pixels:]
    down = fill.copy()
    down[pixels:] = image[:-pixels]
    up = fill.copy()
    up[:-pixels] = image[pixels:]
    signs = set()
    for seed in range(12):
        out_x = run("TranslateX", image, magnitude, (seed, 9))
        out_y = run("TranslateY", image, magnitude, (seed, 9))
        assert np.array_equal(out_x, right) or np.array_equal(out_x, left)
        assert np.array_equal(out_y, down) or np.array_equal(out_y, up)
        signs.add(np.array_equal(out_x, right))
    assert signs == {True, False}  # both directions occur


def test_rotate_90_degrees():
    img = np.random.default_rng(3).integers(0, 256, (9, 9, 3), dtype=np.uint8)
    # magnitude 30 -> 90 degrees (magnitudes extrapolate past 10)
    outs = {run("Rotate", img, 30, (s, 0)).tobytes() for s in range(10)}
    expected = {np.rot90(img, 1).tobytes(), np.rot90(img, -1).tobytes()}
    assert outs == expected


def test_shear_x_unit():
    img = np.random.default_rng(4).integers(0, 128, (6, 12, 3), dtype=np.uint8)
    # magnitude 100/3 -> shear 1.0: output (x, y) = input (x +- y, y)
    for seed in range(6):
        out = run("ShearX", img, 100.0 / 3.0, (seed, 1))
        for sign in (1, -1):
            expected = np.full_like(img, 128)
            for y in range(6):
                for x in range(12):
                    src = x + sign * y
                    if 0 <= src < 12:
                        expected[y, x] = img[y, src]
            if np.array_equal(out, expected):
                break
        else:
            pytest.fail("ShearX output matches neither shear direction")


@pytest.mark.parametrize("magnitude", (1.0, 2.5, 10.0))
def test_cutout(magnitude):
    img = np.zeros((48, 48, 3), np.uint8)
    pad = int(magnitude / 10 * 40)
    for seed in range(5):
        out = run("Cutout", img, magnitude, (seed, 3))
        changed = np.argwhere(np.any(out != 0, axis=-1))
        assert np.all(out[out != 0] == 128)
        rows = changed[:, 0].max() - changed[:, 0].min() + 1
        cols = changed[:, 1].max() - changed[:, 1].min() + 1
        assert len(changed) == rows * cols  # a filled rectangle
        assert min(pad, 48) <= rows <= 2 * pad and min(pad, 48) <= cols <= 2 * pad


def test_every_op_in_tf_data_graph_mode():
    img = tf.constant(np.random.default_rng(5).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    magnitude = tf.Variable(10.0)

    def all_ops(i):
        return tf.stack([ra.NAME_TO_OP[n](img, magnitude, tf.constant([0.3, 0.5, 0.5]))
                         for n in OPS])
    out = next(iter(tf.data.Dataset.range(1).map(all_ops)))
    assert out.shape == (len(OPS), 16, 16, 3) and out.dtype == tf.uint8


def test_randaugment_deterministic_and_magnitude_tensor():
    img = tf.constant(np.random.default_rng(6).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    a = ra.randaugment(img, 10.0, tf.constant([1, 2], tf.int64))
    b = ra.randaugment(img, 10.0, tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (20, 20, 3) and a.dtype == tf.uint8
    np.testing.assert_array_equal(ra.randaugment(img, 10.0, [1, 2], num_layers=0), img)
    # A tf.Variable magnitude is read at run time: changing it changes the result of the
    # same traced dataset function.
    magnitude = tf.Variable(0.0)
    ds = tf.data.Dataset.range(1).map(
        lambda i: ra.randaugment(img, magnitude, tf.stack([i, 7]), ops=("TranslateX",)))
    np.testing.assert_array_equal(next(iter(ds)), img)
    magnitude.assign(1.0)
    assert not np.array_equal(next(iter(ds)), img)


def test_randaugment_bad_arguments():
    img = tf.zeros([8, 8, 3], tf.uint8)
    with pytest.raises(ValueError, match="Blur"):
        ra.randaugment(img, 5.0, [1, 2], ops=("Blur",))
    with pytest.raises(ValueError, match="magnitude"):
        ra.randaugment(img, -1.0, [1, 2])
    with pytest.raises(ValueError, match="uint8"):
        ra.randaugment(tf.zeros([8, 8, 3]), 5.0, [1, 2])


@pytest.mark.parametrize("name,magnitude", [
    ("Rotate", 3.0), ("Rotate", 10.0), ("Rotate", 25.0), ("ShearX", 4.0), ("ShearX", 25.0),
    ("ShearY", 7.0), ("ShearY", 10.0)])
def test_geometric_ops_match_image_projective_transform(name, magnitude):
    """Our whole-pixel gather reproduces TF's own projective-transform kernel."""
    img = np.random.default_rng(7).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    level = magnitude / 10
    h, w = img.shape[:2]
    for seed in range(4):
        out = run(name, img, magnitude, (seed, 11))
        for sign in (1.0, -1.0):
            if name == "Rotate":
                a = np.deg2rad(sign * 30 * level)
                cos, sin = np.cos(a), np.sin(a)
                xo = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2
                yo = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2
                t = [cos, -sin, xo, sin, cos, yo, 0, 0]
            elif name == "ShearX":
                t = [1, sign * 0.3 * level, 0, 0, 1, 0, 0, 0]
            else:
                t = [1, 0, 0, sign * 0.3 * level, 1, 0, 0, 0]
            ref = tf.raw_ops.ImageProjectiveTransformV3(
                images=img[None], transforms=tf.constant([t], tf.float32), output_shape=[h, w],
                fill_value=128.0, interpolation="NEAREST", fill_mode="CONSTANT")[0].numpy()
            if np.array_equal(out, ref):  # identical, pixel for pixel
                break
        else:
            pytest.fail(f"{name} at magnitude {magnitude} differs from ImageProjectiveTransformV3")


# --- the "increasing" policy ---------------------------------------------------------------

def run_increasing(name, img, magnitude, seed=(1, 2)):
    out = apply_op(tf.constant(img), name, magnitude, seed, policy="increasing")
    assert out.dtype == tf.uint8 and out.shape == img.shape
    return out.numpy()


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("seed", [(1, 2), (5, 9), (7, 3)])
def test_increasing_ops_are_the_identity_at_magnitude_0(image, name, seed):
    # The official ops are not: Posterize gives black, Solarize inverts, Brightness darkens.
    np.testing.assert_array_equal(run_increasing(name, image, 0.0, seed), image)


def test_official_ops_at_low_magnitude_destroy_the_image(image):
    assert run("Posterize", image, 1.0).max() == 0
    np.testing.assert_array_equal(run("Solarize", image, 0.0), 255 - image)
    assert run("Brightness", image, 0.0).mean() < 0.15 * image.mean()


def _mean_change(name, img, magnitude, seeds=range(12)):
    return np.mean([np.abs(run_increasing(name, img, magnitude, (s, 1)).astype(float) - img).mean() for s in seeds])


@pytest.mark.parametrize("name", OPS)
def test_increasing_ops_change_the_image_more_as_the_magnitude_grows(name):
    # A smooth low-contrast ramp (60..180): AutoContrast and Equalize have something to do, and a
    # pixel moved further lands on a value further from its own.
    ys, xs = np.mgrid[0:24, 0:32]
    ramp = 60 + 120 * (0.6 * xs / 31 + 0.4 * ys / 23)
    image = np.stack([ramp, ramp[::-1], ramp[:, ::-1]], axis=-1).astype(np.uint8)
    changes = [_mean_change(name, image, m) for m in (0.0, 3.0, 10.0)]
    assert changes[0] == 0 and changes[0] < changes[2] and changes[1] <= changes[2] + 1e-9, changes


def test_increasing_ops_reach_the_official_strength_at_10():
    img = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    for name in ("Posterize", "Solarize", "SolarizeAdd", "Rotate", "ShearX"):
        official_seed = (1, 2)
        if name == "Solarize":  # increasing: threshold 0 at 10 (all inverted) = official at magnitude 0
            np.testing.assert_array_equal(run_increasing(name, img, 10.0), run(name, img, 0.0))
        else:
            np.testing.assert_array_equal(run_increasing(name, img, 10.0, official_seed),
                                          run(name, img, 10.0, official_seed))
    # Brightness: factor 1 +- 0.9, the official 1.9 (or 0.1) at 10.
    bright = run_increasing("Brightness", img, 10.0, (0, 0)).astype(float)
    assert any(np.array_equal(bright, run(name, img, m).astype(float))
               for name, m in (("Brightness", 10.0), ("Brightness", 0.0)))
    # Cutout: half-size 40 px at 224 px, the official constant; on a 64-px image 18% of the side.
    small = np.full((64, 64, 3), 7, np.uint8)
    filled = (run_increasing("Cutout", small, 10.0, (2, 2)) == ra.FILL_VALUE).all(axis=2).sum()
    assert 0 < filled <= (2 * int(40 * 64 / 224)) ** 2


def test_increasing_translation_is_relative_to_the_image():
    img = np.arange(64 * 64 * 3, dtype=np.int64).reshape(64, 64, 3) % 251
    img = img.astype(np.uint8)
    out = run_increasing("TranslateX", img, 10.0, (0, 0))
    # 45% of 64 px = 28.8 -> 29 whole pixels, either way; the official 100 px would empty the image.
    shifted = [np.array_equal(out[:, 29:], img[:, :-29]), np.array_equal(out[:, :-29], img[:, 29:])]
    assert any(shifted)
    assert (run("TranslateX", img, 10.0) == ra.FILL_VALUE).all()


def test_unknown_policy_is_named():
    with pytest.raises(ValueError, match="policy 'strong'"):
        ra.randaugment(tf.zeros([8, 8, 3], tf.uint8), 5.0, [1, 2], policy="strong")


def test_config_policies_are_the_pipelines():
    from effnet_tf.config.schema import RANDAUG_POLICIES

    assert set(RANDAUG_POLICIES) == set(ra.POLICIES)
