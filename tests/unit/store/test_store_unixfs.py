"""dag-pb and UnixFS encoding: exact bytes from the specs and strict decoding."""

import pytest

from overlay.core.errors import WireError
from store.unixfs import (
    DataType,
    PBLink,
    PBNode,
    UnixFSData,
    decode_pbnode,
    decode_unixfs,
    encode_link,
    encode_node,
    encode_pbnode,
    encode_unixfs,
    encode_unixfs_full,
)


def test_hello_leaf_bytes() -> None:
    # PBNode{Data: UnixFS{Type: File, Data: "hello\n", filesize: 6}} — the block behind
    # QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN.
    block = encode_node([], encode_unixfs(DataType.FILE, b"hello\n", 6))
    assert block == bytes.fromhex("0a0c080212") + b"\x06hello\n" + b"\x18\x06"


def test_empty_file_and_directory_bytes() -> None:
    assert encode_node([], encode_unixfs(DataType.FILE, b"", 0)) == bytes.fromhex("0a0408021800")
    assert encode_node([], encode_unixfs(DataType.DIRECTORY)) == bytes.fromhex("0a020801")


def test_links_precede_data_and_empty_names_are_written() -> None:
    cid = b"\x12\x20" + bytes(32)
    link = encode_link(cid, "", 5)
    assert link == b"\x12\x28\x0a\x22" + cid + b"\x12\x00\x18\x05"
    node = encode_node([link], encode_unixfs(DataType.FILE, b"", 10, [10]))
    assert node.startswith(b"\x12") and node[len(link)] == 0x0A
    dec = decode_pbnode(node)
    assert dec.links == (PBLink(cid, "", 5),)
    u = decode_unixfs(dec.data or b"")
    assert (u.type, u.filesize, u.blocksizes) == (DataType.FILE, 10, (10,))


def test_blocksizes_are_not_packed_but_packed_is_read() -> None:
    enc = encode_unixfs(DataType.FILE, b"", 3, [1, 2])
    assert enc == b"\x08\x02\x18\x03\x20\x01\x20\x02"
    packed = b"\x08\x02\x18\x03\x22\x02\x01\x02"
    assert decode_unixfs(packed).blocksizes == (1, 2)


def test_full_unixfs_fields_round_trip() -> None:
    u = UnixFSData(DataType.SYMLINK, b"target", None, (), 0x22, 256, 0o755, (-5, 7))
    back = decode_unixfs(encode_unixfs_full(u))
    assert back.type is DataType.SYMLINK and bytes(back.data) == b"target"
    assert (back.hash_type, back.fanout, back.mode, back.mtime) == (0x22, 256, 0o755, (-5, 7))


def test_decode_returns_views_not_copies() -> None:
    block = encode_node([], encode_unixfs(DataType.FILE, b"x" * 1000, 1000))
    node = decode_pbnode(block)
    assert isinstance(node.data, memoryview)
    assert isinstance(decode_unixfs(node.data).data, memoryview)


@pytest.mark.parametrize(
    "block, why",
    [
        (b"\x0a\x02\x08\x01\x12\x00", "Links after Data"),
        (b"\x0a\x00\x0a\x00", "duplicate"),
        (b"\x1a\x00", "unexpected PBNode field"),
        (b"\x08\x01", "wire type"),
        (b"\x12\x02\x12\x00", "without Hash"),
        (b"\x12\x04\x12\x00\x0a\x00", "out of order"),
        (b"\x0a\x05\x08", "claims"),
        (b"\x0a", "varint"),
        (b"\x12\x03\x0a\x01", "claims"),
        (b"\x12\x03\x12\x01\xff", "UTF-8"),
    ],
)
def test_strict_dag_pb_decoding(block: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        decode_pbnode(block)


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "without Type"),
        (b"\x08\x09", "unknown DataType"),
        (b"\x48\x01", "unexpected varint field"),
        (b"\x08\x02\x4a\x00", "unexpected bytes field"),
        (b"\x08\x02\x12\x05ab", "claims"),
        (b"\x08\x02\x0d\x00\x00\x00\x00", "wire type"),
    ],
)
def test_strict_unixfs_decoding(data: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        decode_unixfs(data)


def test_pbnode_round_trip() -> None:
    n = PBNode((PBLink(b"\x12\x20" + bytes(32), "name", 7), PBLink(b"\x01", None, None)), b"d")
    back = decode_pbnode(encode_pbnode(n))
    assert back.links == n.links and bytes(back.data or b"") == b"d"
