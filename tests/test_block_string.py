"""Block-string grammar: decoding, canonical encoding and every class of bad input."""
import pytest

from effnet_tf.blocks.block_string import BlockArgs, decode, decode_all, encode
from effnet_tf.model.variants import list_models, get_variant


def test_decode_v2_fused_string():
    args = decode("r2_k3_s2_e4_i24_o48_c1")
    assert args == BlockArgs(repeats=2, kernel_size=3, stride=2, expand_ratio=4.0,
                             input_filters=24, output_filters=48, se_ratio=None, fused=True, skip=True)


def test_decode_v1_string_with_pair_stride_and_se():
    args = decode("r4_k5_s22_e6_i112_o192_se0.25")
    assert (args.stride, args.kernel_size, args.se_ratio, args.fused) == (2, 5, 0.25, False)
    assert decode("r1_k3_s11_e1_i32_o16_se0.25").stride == 1


def test_noskip_float_expand_and_c0():
    args = decode("r1_k3_s1_e2.5_i16_o16_c0_noskip")
    assert args.expand_ratio == 2.5 and not args.fused and not args.skip


@pytest.mark.parametrize("name", list_models())
def test_encode_decode_round_trip_is_canonical(name):
    for block_string in get_variant(name).blocks:
        canonical = encode(decode(block_string))
        assert encode(decode(canonical)) == canonical
        assert decode(canonical) == decode(block_string)


def test_canonical_form():
    assert encode(decode("r1_k3_s11_e1_i32_o16_se0.25")) == "r1_k3_s1_e1_i32_o16_se0.25"
    assert encode(decode("r2_k3_s2_e4_i24_o48_c1")) == "r2_k3_s2_e4_i24_o48_c1"
    assert encode(decode("r1_k3_s2_e2.5_i8_o8_c0_noskip")) == "r1_k3_s2_e2.5_i8_o8_noskip"


@pytest.mark.parametrize(
    "bad, token_or_key",
    [
        ("r2_k3_s2_e4_i24", "o"),                      # missing required key
        ("r2_k3_s2_e4_i24_o48_x5", "'x5'"),            # unknown key
        ("r0_k3_s2_e4_i24_o48", "'r0'"),               # repeats < 1
        ("r1_k3_s3_e4_i24_o48", "'s3'"),               # stride other than 1/2
        ("r1_k3_s12_e4_i24_o48", "'s12'"),             # non-square V1 stride
        ("r1_kx_s2_e4_i24_o48", "'kx'"),               # non-numeric
        ("r1_k3_s2_e4_i24_o48_se1.5", "'se1.5'"),      # se out of range
        ("r1_k3_s2_e4_i24_o48_c2", "'c2'"),            # bad conv type
        ("r1_r2_k3_s2_e4_i24_o48", "'r2'"),            # duplicated key
        ("r1_k3_s2_e4_i24_o48__c1", "''"),             # empty token
    ],
)
def test_bad_strings_name_the_string_token_and_valid_keys(bad, token_or_key):
    with pytest.raises(ValueError) as info:
        decode(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert token_or_key in message
    assert "Valid keys" in message and "noskip" in message


def test_empty_string_and_empty_list():
    with pytest.raises(ValueError, match="empty"):
        decode("")
    with pytest.raises(ValueError, match="at least one"):
        decode_all([])


def test_decode_all_accepts_comma_separated():
    assert len(decode_all("r1_k3_s1_e1_i32_o16_c1,r2_k3_s2_e4_i16_o32_c1")) == 2
