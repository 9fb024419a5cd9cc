"""`cat` hashing raw leaves ahead on threads: same bytes, same errors, in the same order."""

import random
import threading
from pathlib import Path

import pytest

from overlay.core.cid import DAG_PB, Cid
from store.blockstore import BlockNotFound, BlockStore, CorruptBlock
from store.exporter import BadDag, Exporter
from store.importer import Importer, ImportOptions
from store.unixfs import PBLink, PBNode, decode_pbnode, encode_pbnode

CHUNK = 1024
DATA = random.Random(7).randbytes(300 * CHUNK + 17)  # 301 leaves, two levels of parents


def _add(s: BlockStore) -> tuple[Cid, list[Cid]]:
    """The file's root and its leaves in file order (from the reference index)."""
    imp = Importer(s, ImportOptions(cid_version=1, chunk_size=CHUNK, max_links=16))
    root = imp.add_bytes(DATA).cid
    leaves: list[Cid] = []
    with s.reader() as r:
        todo = [root.multihash]
        while todo:
            mh = todo.pop()
            links = r.links(mh)
            if links is None:
                leaves.append(Cid.from_multihash(mh, 0x55, 1))
            else:
                todo.extend(reversed([Cid.from_bytes(c).multihash for c in links]))
    return root, leaves


def _collect(s: BlockStore, root: Cid, ahead: int) -> tuple[bytearray, BaseException | None]:
    out = bytearray()
    try:
        Exporter(s, verify_ahead=ahead).cat(root, out.extend)
    except (CorruptBlock, BlockNotFound) as e:
        return out, e
    return out, None


@pytest.mark.parametrize("ahead", [0, 1, 8 * CHUNK, 1 << 30])
def test_bytes_identical_for_every_window(tmp_path: Path, ahead: int) -> None:
    with BlockStore(tmp_path) as s:
        root, leaves = _add(s)
        assert len(leaves) == 301
        out, err = _collect(s, root, ahead)
        assert err is None and bytes(out) == DATA


@pytest.mark.parametrize("ahead", [0, 8 * CHUNK, 1 << 30])
def test_corrupt_leaf_raises_in_its_place(tmp_path: Path, ahead: int) -> None:
    """Every byte before the corrupt leaf is delivered, none of it or after it."""
    with BlockStore(tmp_path) as s:
        root, leaves = _add(s)
        with s.env.begin(write=True) as txn:
            txn.put(leaves[120].multihash, b"x" * CHUNK, db=s._blocks)
        out, err = _collect(s, root, ahead)
        assert isinstance(err, CorruptBlock) and err.cid == leaves[120]
        assert str(root) in str(err)
        assert bytes(out) == DATA[: 120 * CHUNK]


@pytest.mark.parametrize("ahead", [0, 8 * CHUNK, 1 << 30])
def test_missing_leaf_after_a_corrupt_one_reports_the_first(tmp_path: Path,
                                                            ahead: int) -> None:
    """The walk runs ahead and meets the missing block first; the corrupt one before it
    is still what the reader hears about, as without threads."""
    with BlockStore(tmp_path) as s:
        root, leaves = _add(s)
        with s.env.begin(write=True) as txn:
            txn.put(leaves[50].multihash, b"y" * CHUNK, db=s._blocks)
        s.delete(leaves[60])
        out, err = _collect(s, root, ahead)
        assert isinstance(err, CorruptBlock) and err.cid == leaves[50]
        assert bytes(out) == DATA[: 50 * CHUNK]
        with s.env.begin(write=True) as txn:  # repair: now the missing one is reported
            txn.put(leaves[50].multihash, DATA[50 * CHUNK: 51 * CHUNK], db=s._blocks)
        out, err = _collect(s, root, ahead)
        assert isinstance(err, BlockNotFound) and err.cid == leaves[60]
        assert bytes(out) == DATA[: 60 * CHUNK]


def test_writer_error_stops_the_threads_and_the_store_stays_usable(tmp_path: Path) -> None:
    """A failing sink ends the cat; the store then grows its map (which needs every
    transaction closed) and reads again."""
    with BlockStore(tmp_path, initial_map_size_mib=1) as s:
        root, _ = _add(s)
        seen = 0

        def sink(mv: memoryview) -> None:
            nonlocal seen
            seen += len(mv)
            if seen > 40 * CHUNK:
                raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            Exporter(s, verify_ahead=1 << 20).cat(root, sink)
        Importer(s).add_bytes(random.Random(8).randbytes(3 << 20))  # forces a resize
        assert Exporter(s).read_all(root) == DATA


def _reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith(("colony-walk", "colony-verify"))]


@pytest.mark.parametrize("ahead", [0, 8 * CHUNK, 1 << 30])
def test_v0_dag_pb_leaves_read_ahead_and_corrupt_one_reported(tmp_path: Path,
                                                               ahead: int) -> None:
    """v0 leaves are dag-pb, checked by the walk itself (on the walk thread when reading
    ahead): same bytes, and a corrupt leaf stops the output exactly before it."""
    with BlockStore(tmp_path) as s:
        imp = Importer(s, ImportOptions(cid_version=0, chunk_size=CHUNK, max_links=16))
        root = imp.add_bytes(DATA).cid
        out, err = _collect(s, root, ahead)
        assert err is None and bytes(out) == DATA
        with s.reader() as r:  # leaf 30 (from 0): root → 1st → its 2nd parent → 15th link
            node = root
            for i in (0, 1, 14):
                node = Cid.from_bytes(decode_pbnode(r.read(node)).links[i].hash)
            leaf = node
        with s.env.begin(write=True) as txn:
            txn.put(leaf.multihash, b"z" * 40, db=s._blocks)
        out, err = _collect(s, root, ahead)
        assert isinstance(err, CorruptBlock) and err.cid == leaf
        assert bytes(out) == DATA[: 30 * CHUNK]


def test_bad_dag_found_ahead_is_raised_after_the_pieces_before_it(tmp_path: Path) -> None:
    """A parent whose links and blocksizes disagree is met by the walk thread long before
    the writer gets there; the writer still receives every byte before that subtree."""
    with BlockStore(tmp_path) as s:
        root, _ = _add(s)
        with s.reader() as r:
            top = decode_pbnode(r.read(root))
            second = decode_pbnode(r.read(Cid.from_bytes(top.links[1].hash)))
        # The 2nd subtree (leaves 256..300) without its last leaf, under a new root:
        # its links and blocksizes disagree (BadDag), and its blocks all verify.
        sub = encode_pbnode(PBNode(links=second.links[:-1], data=second.data))
        sub_cid = Cid.of(DAG_PB, sub)
        s.put(sub_cid, sub)
        top_links = (top.links[0], PBLink(sub_cid.to_bytes(), top.links[1].name, None))
        bad_root = encode_pbnode(PBNode(links=top_links, data=top.data))
        root = Cid.of(DAG_PB, bad_root)
        s.put(root, bad_root)
        out = bytearray()
        with pytest.raises(BadDag):
            Exporter(s, verify_ahead=1 << 30).cat(root, out.extend)
        assert bytes(out) == DATA[: 256 * CHUNK]
        assert _reader_threads() == []


def test_threads_are_gone_when_cat_returns_or_the_sink_fails(tmp_path: Path) -> None:
    with BlockStore(tmp_path) as s:
        root, _ = _add(s)
        assert Exporter(s, verify_ahead=8 * CHUNK).read_all(root) == DATA
        assert _reader_threads() == []

        def sink(mv: memoryview) -> None:
            raise OSError("broken pipe")

        with pytest.raises(OSError, match="broken pipe"):
            Exporter(s, verify_ahead=8 * CHUNK).cat(root, sink)
        assert _reader_threads() == []
