"""Hypothesis properties of the store codecs and the import/export round trip."""

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay.core.cid import CODEC_NAMES, DAG_PB, Cid
from overlay.core.errors import InvalidCid, WireError
from store.blockstore import BlockStore
from store.exporter import Exporter
from store.importer import Importer, ImportOptions
from store.unixfs import (
    DataType,
    PBLink,
    PBNode,
    UnixFSData,
    decode_pbnode,
    decode_unixfs,
    encode_pbnode,
    encode_unixfs_full,
)

digests = st.binary(min_size=32, max_size=32)
cids = st.one_of(
    digests.map(lambda d: Cid(0, DAG_PB, d)),
    st.builds(Cid, st.just(1), st.sampled_from(sorted(CODEC_NAMES)), digests),
)


@given(cids)
def test_cid_text_and_bytes_round_trip(c: Cid) -> None:
    assert Cid.parse(str(c)) == c
    assert Cid.from_bytes(c.to_bytes()) == c
    assert Cid.from_multihash(c.multihash, c.codec, c.version) == c


@given(st.text(max_size=80))
def test_cid_parse_accepts_or_raises_invalid_cid(text: str) -> None:
    try:
        c = Cid.parse(text)
    except InvalidCid as e:
        assert "CID" in str(e)
    else:
        assert Cid.parse(str(c)) == c


links = st.builds(
    PBLink,
    cids.map(lambda c: c.to_bytes()),
    st.one_of(st.none(), st.text(max_size=20)),
    st.one_of(st.none(), st.integers(0, 2**63 - 1)),
)
nodes = st.builds(
    PBNode, st.lists(links, max_size=6).map(tuple), st.one_of(st.none(), st.binary(max_size=64))
)


@given(nodes)
def test_dag_pb_round_trip(n: PBNode) -> None:
    back = decode_pbnode(encode_pbnode(n))
    assert back.links == n.links
    assert (None if back.data is None else bytes(back.data)) == n.data
    assert encode_pbnode(back) == encode_pbnode(n)


unixfs = st.builds(
    UnixFSData,
    st.sampled_from(list(DataType)),
    st.binary(max_size=64),
    st.one_of(st.none(), st.integers(0, 2**63 - 1)),
    st.lists(st.integers(0, 2**40), max_size=8).map(tuple),
    st.one_of(st.none(), st.integers(0, 2**32)),
    st.one_of(st.none(), st.integers(0, 1024)),
    st.one_of(st.none(), st.integers(0, 0o7777)),
    st.one_of(st.none(), st.tuples(st.integers(-(2**40), 2**40),
                                   st.one_of(st.none(), st.integers(0, 999_999_999)))),
)


@given(unixfs)
def test_unixfs_round_trip(u: UnixFSData) -> None:
    back = decode_unixfs(encode_unixfs_full(u))
    assert bytes(back.data) == bytes(u.data)
    assert (back.type, back.filesize, back.blocksizes, back.hash_type, back.fanout,
            back.mode, back.mtime) == (u.type, u.filesize, u.blocksizes, u.hash_type,
                                       u.fanout, u.mode, u.mtime)


@given(st.binary(max_size=200))
def test_decoders_fail_only_with_wire_errors(junk: bytes) -> None:
    try:
        node = decode_pbnode(junk)
    except WireError:
        pass
    else:  # whatever decodes re-encodes to a node that decodes the same
        again = decode_pbnode(encode_pbnode(node))
        assert again.links == node.links
    try:
        u = decode_unixfs(junk)
    except WireError:
        pass
    else:
        assert isinstance(u.type, DataType)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=3000),
    chunk=st.integers(1, 64),
    links=st.integers(2, 5),
    version=st.sampled_from([0, 1]),
)
def test_import_export_round_trip_at_random_chunk_boundaries(
    tmp_path: Path, data: bytes, chunk: int, links: int, version: int
) -> None:
    # Small chunks and fan-out give deep trees from a few KiB.
    with BlockStore(tmp_path / "s", initial_map_size_mib=4) as store:
        opts = ImportOptions(cid_version=version, chunk_size=chunk, max_links=links)
        added = Importer(store, opts).add_bytes(data)
        assert added.size == len(data)
        assert Exporter(store).read_all(added.cid) == data
        assert Exporter(store).stat(added.cid).size == len(data)
        assert store.verify_all() == []
