"""CID parse/format: known vectors and every kind of bad input."""

import pytest

from overlay.core.cid import DAG_PB, RAW, Cid
from overlay.core.errors import InvalidCid

HELLO_V0 = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
EMPTY_RAW = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EMPTY_DIR_V1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


def test_v0_round_trip_and_fields() -> None:
    c = Cid.parse(HELLO_V0)
    assert (c.version, c.codec) == (0, DAG_PB)
    assert str(c) == HELLO_V0
    assert c.to_bytes() == c.multihash and c.multihash[:2] == b"\x12\x20"
    assert Cid.from_bytes(c.to_bytes()) == c


def test_v1_raw_is_hash_of_bytes() -> None:
    c = Cid.parse(EMPTY_RAW)
    assert (c.version, c.codec, c.codec_name) == (1, RAW, "raw")
    assert c == Cid.of(RAW, b"")
    assert c.verify(b"") and not c.verify(b"x")
    assert str(c) == EMPTY_RAW and c.to_bytes()[:4] == b"\x01\x55\x12\x20"


def test_v0_v1_share_a_multihash() -> None:
    v0 = Cid.parse("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn")
    v1 = Cid.parse(EMPTY_DIR_V1)
    assert v0.to_v1() == v1 and v1.with_version(0) == v0
    assert v0.multihash == v1.multihash


def test_base58_v1_and_upper_base32_are_accepted() -> None:
    from overlay.core.multiformats import b58encode

    c = Cid.parse(EMPTY_RAW)
    assert Cid.parse("z" + b58encode(c.to_bytes())) == c
    assert Cid.parse("B" + EMPTY_RAW[1:].upper()) == c


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nonsense",
        "Qm" + "1" * 44,  # base58 but not a 34-byte multihash
        HELLO_V0[:-1],  # one character short
        HELLO_V0[:-1] + "0",  # '0' is not base58
        "b" + "!" * 58,
        "bafy",  # truncated v1
        EMPTY_RAW[:-4],
        "x" * 500,
        "bciqa",  # version 2-ish garbage
    ],
)
def test_invalid_cids_raise_naming_the_text(text: str) -> None:
    with pytest.raises(InvalidCid) as e:
        Cid.parse(text)
    if text:
        assert repr(text[:20])[:10] in str(e.value) or "too long" in str(e.value)


def test_other_codecs_and_hashes_parse_but_only_known_hashes_verify() -> None:
    # dag-cbor (0x71) and a sha2-512 multihash: well-formed, so they pass through.
    assert Cid.from_bytes(b"\x01\x71\x12\x20" + bytes(32)).codec_name == "dag-cbor"
    c = Cid.from_bytes(b"\x01\x55\x13\x40" + bytes(64))
    assert c.hash_code == 0x13 and not c.verifiable
    with pytest.raises(InvalidCid, match=r"cannot verify multihash 0x13 \(sha2-512\)"):
        c.verify(b"")
    with pytest.raises(InvalidCid, match="sha2-256"):
        Cid.from_bytes(b"\x01\x55\x12\x40" + bytes(64))  # sha2-256 of 64 bytes
    with pytest.raises(InvalidCid):
        Cid(0, RAW, bytes(32))
    with pytest.raises(InvalidCid):
        Cid(1, RAW, bytes(31))
