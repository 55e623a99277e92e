"""Size buckets."""
import pytest

from effnet_tf.data import make_buckets, snap_to_bucket


def test_make_buckets():
    assert make_buckets(128, 384, 32) == (128, 160, 192, 224, 256, 288, 320, 352, 384)
    assert make_buckets() == make_buckets(128, 384, 32)
    assert make_buckets(100, 300, 32) == (128, 160, 192, 224, 256, 288)
    assert make_buckets(64, 64, 32) == (64,)


@pytest.mark.parametrize("kwargs,match", [
    (dict(min_size=0), "min_size"), (dict(step=-32), "step"),
    (dict(min_size=300, max_size=200), "max_size"),
    (dict(min_size=129, max_size=150), "no multiple"),
    (dict(min_size=128.0), "min_size"),
])
def test_make_buckets_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_buckets(**kwargs)


def test_snap_to_bucket():
    b = make_buckets(128, 384, 32)
    assert snap_to_bucket(171, b) == 160   # V2-S progressive sizes 171, 214, 257, 300
    assert snap_to_bucket(214, b) == 224
    assert snap_to_bucket(257, b) == 256
    assert snap_to_bucket(300, b) == 288
    assert snap_to_bucket(176, b) == 192   # tie goes up
    assert snap_to_bucket(208, b) == 224
    assert snap_to_bucket(10, b) == 128 and snap_to_bucket(1000, b) == 384
    assert snap_to_bucket(224, [224]) == 224
    assert snap_to_bucket(200, [256, 128]) == 256  # unsorted input is fine; tie -> up


@pytest.mark.parametrize("size,buckets,match", [
    (0, (128,), "size"), (-5, (128,), "size"), (128, (), "empty"), (128, (128, -1), "positive"),
    (128, None, "iterable"),
])
def test_snap_errors(size, buckets, match):
    with pytest.raises(ValueError, match=match):
        snap_to_bucket(size, buckets)
