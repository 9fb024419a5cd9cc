"""CIDs beyond sha2-256 raw/dag-pb in base32: base58btc and base36 text, dag-cbor,
dag-json and libp2p-key codecs, identity and unknown multihashes (vectors from the
multiformats/IPLD specs and docs), and what the block store does with each."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.core.cid import (
    BASES,
    CODEC_NAMES,
    DAG_CBOR,
    DAG_JSON,
    DAG_PB,
    LIBP2P_KEY,
    MAX_DIGEST_BYTES,
    RAW,
    Cid,
    UnverifiableHash,
    sha256_multihash,
)
from overlay.core.errors import InvalidCid
from overlay.core.multiformats import IDENTITY, SHA2_256, b58encode
from store.blockstore import BlockStore
from store.exporter import Exporter

# libp2p-key CID of an ed25519 peer id (identity multihash), as kubo prints IPNS names.
K51 = "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8"
K51_B32 = "bafzaajaiaejcbzdibmxyzdjbbehgvizh6g5tikvy47mshdy6gwbruvgwvd24seje"
K51_PEER = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"
# dag-cbor {"hello": "world"} (IPLD docs), sha2-256.
HELLO_CBOR = bytes.fromhex("a16568656c6c6f65776f726c64")
HELLO_CBOR_CID = "bafyreidykglsfhoixmivffc5uwhcgshx4j465xwqntbmu43nb2dzqwfvae"
# The empty identity CID (raw codec, zero-length digest), and "hello\n" inlined.
EMPTY_IDENTITY = "bafkqaaa"
HELLO_IDENTITY = "bafkqabtimvwgy3yk"
HELLO_V1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"


@pytest.mark.parametrize("text, codec, hash_code, b32", [
    (K51, LIBP2P_KEY, IDENTITY, K51_B32),
    (K51_B32, LIBP2P_KEY, IDENTITY, K51_B32),
    ("K" + K51[1:].upper(), LIBP2P_KEY, IDENTITY, K51_B32),
    (HELLO_CBOR_CID, DAG_CBOR, SHA2_256, HELLO_CBOR_CID),
    (EMPTY_IDENTITY, RAW, IDENTITY, EMPTY_IDENTITY),
    (HELLO_IDENTITY, RAW, IDENTITY, HELLO_IDENTITY),
    ("k10vj2didmfdtj4a", RAW, IDENTITY, HELLO_IDENTITY),
    ("z5LkPo4pdsXsBo", RAW, IDENTITY, HELLO_IDENTITY),
    (HELLO_V1, RAW, SHA2_256, HELLO_V1),
])
def test_vectors(text: str, codec: int, hash_code: int, b32: str) -> None:
    c = Cid.parse(text)
    assert (c.version, c.codec, c.hash_code) == (1, codec, hash_code)
    assert str(c) == b32
    for base in BASES:
        assert Cid.parse(c.encode(base)) == c
    assert Cid.from_bytes(c.to_bytes()) == c


def test_base36_libp2p_key_is_the_peer_id() -> None:
    c = Cid.parse(K51)
    assert c.codec_name == "libp2p-key" and c.encode("base36") == K51
    assert b58encode(c.multihash) == K51_PEER


def test_identity_data_and_dag_cbor_hash_verify() -> None:
    assert Cid.parse(HELLO_IDENTITY).digest == b"hello\n"
    assert Cid.parse(HELLO_IDENTITY).verify(b"hello\n")
    assert not Cid.parse(HELLO_IDENTITY).verify(b"hello")
    assert Cid.of(DAG_CBOR, HELLO_CBOR) == Cid.parse(HELLO_CBOR_CID)
    assert Cid.parse(HELLO_CBOR_CID).verify(HELLO_CBOR)
    assert Cid.of(DAG_JSON, b"{}").codec_name == "dag-json"


def test_unknown_multihash_passes_through_but_never_verifies() -> None:
    blake3 = Cid(1, RAW, bytes(range(32)), 0x1E)
    assert Cid.parse(str(blake3)) == blake3
    assert Cid.parse(blake3.encode("base36")) == blake3
    with pytest.raises(UnverifiableHash, match=r"cannot verify multihash 0x1e \(blake3\)"):
        blake3.verify(b"x")
    odd = Cid(1, 0x300001, b"\x01\x02", 0x9999)  # unnamed codec and hash
    assert Cid.parse(str(odd)) == odd and odd.codec_name == "codec-0x300001"


@pytest.mark.parametrize("raw, msg", [
    (b"\x01\x55\x00\x05abc", "digest length"),  # identity says 5, has 3
    (b"\x01\x55\x00\x81\x01" + bytes(129), f"at most {MAX_DIGEST_BYTES}"),
    (b"\x01\x55\x1e\x20" + bytes(31), "digest length"),
    (b"\x02\x55\x12\x20" + bytes(32), "unsupported version"),
    (b"\x01\x55\x80\x00" + bytes(2), "not minimally encoded"),
])
def test_malformed_bytes_are_refused(raw: bytes, msg: str) -> None:
    with pytest.raises(InvalidCid, match=msg):
        Cid.from_bytes(raw)


@pytest.mark.parametrize("text", ["k", "k!!", "kZZ" + "!" * 3, "K" + "0" * 300])
def test_bad_base36_is_refused(text: str) -> None:
    with pytest.raises(InvalidCid):
        Cid.parse(text)


def test_v0_stays_sha256_dag_pb() -> None:
    with pytest.raises(InvalidCid, match="CIDv0"):
        Cid(0, DAG_PB, b"x", IDENTITY)
    with pytest.raises(InvalidCid, match="CIDv0"):
        Cid(0, DAG_CBOR, bytes(32))


def test_store_identity_without_blocks_and_refuses_unverifiable(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "s") as store:
        ident = Cid.parse(HELLO_IDENTITY)
        assert store.has(ident) and store.get(ident) == b"hello\n"
        assert Exporter(store).read_all(ident) == b"hello\n"
        assert store.put(ident, b"hello\n") is False  # nothing to store
        assert store.stat().blocks == 0
        blake3 = Cid(1, RAW, bytes(32), 0x1E)
        with pytest.raises(UnverifiableHash, match="blake3"):
            store.put(blake3, b"x")
        with pytest.raises(UnverifiableHash, match="blake3"):
            store.put_many([(blake3, b"x", None)])
        with pytest.raises(UnverifiableHash, match="blake3"):
            store.get(blake3)
        assert not store.has(blake3)
        cbor = Cid.parse(HELLO_CBOR_CID)
        assert store.put(cbor, HELLO_CBOR) and store.get(cbor) == HELLO_CBOR
        assert store.stat().blocks == 1


_digests = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda d: (d, SHA2_256)),
    st.binary(max_size=MAX_DIGEST_BYTES).map(lambda d: (d, IDENTITY)),
    st.tuples(st.binary(max_size=MAX_DIGEST_BYTES),
              st.integers(1, 2**32).filter(lambda c: c != SHA2_256)).map(tuple),
)


@given(_digests, st.one_of(st.sampled_from(sorted(CODEC_NAMES)), st.integers(0, 2**40)),
       st.sampled_from(BASES))
def test_round_trip_property(dh: tuple[bytes, int], codec: int, base: str) -> None:
    digest, code = dh
    c = Cid(1, codec, digest, code)
    assert Cid.parse(c.encode(base)) == c
    assert Cid.from_bytes(c.to_bytes()) == c
    assert Cid.from_multihash(c.multihash, codec) == c


@pytest.mark.parametrize(("text", "fast"), [
    ("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN", True),  # v0
    (HELLO_V1, True),  # v1 raw sha2-256
    (HELLO_CBOR_CID, False),  # dag-cbor: the general path
    (HELLO_IDENTITY, False),  # identity
    (EMPTY_IDENTITY, False),
    (K51_B32, False),  # libp2p-key, identity
])
def test_sha256_multihash_fast_lane_agrees_with_cid(text: str, fast: bool) -> None:
    """The bulk paths' shortcut gives the store key `Cid` gives, or None (general path)."""
    cid = Cid.parse(text)
    got = sha256_multihash(cid.to_bytes())
    assert got == (cid.multihash if fast else None)
    v1_pb = Cid(1, DAG_PB, bytes(range(32)))
    assert sha256_multihash(v1_pb.to_bytes()) == v1_pb.multihash
    # A 36-byte v1 CID of another codec, and a 34-byte non-v0 string: not taken.
    assert sha256_multihash(Cid(1, DAG_CBOR, bytes(32)).to_bytes()) is None
    assert sha256_multihash(b"\x13\x20" + bytes(32)) is None
