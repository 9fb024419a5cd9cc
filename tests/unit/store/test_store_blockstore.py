"""LMDB block store, pins and GC: dedup, batches, map growth, corruption, missing blocks."""

import random
from pathlib import Path

import lmdb
import pytest

from overlay.core.cid import DAG_PB, RAW, Cid
from store import gc
from store.blockstore import BlockNotFound, BlockStore, CorruptBlock, StoreBusy, view_address
from store.exporter import Exporter
from store.importer import Importer, ImportOptions
from store.pins import NotPinned, PinMode, Pins


def rnd(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def blocks(n: int, size: int = 100) -> list[tuple[Cid, bytes, None]]:
    out = []
    for i in range(n):
        b = i.to_bytes(4, "big") * (size // 4)
        out.append((Cid.of(RAW, b), b, None))
    return out


def test_put_get_dedup_and_counters(tmp_path: Path) -> None:
    with BlockStore(tmp_path) as s:
        batch = blocks(10)
        assert s.put_many(batch) == 10
        assert s.put_many(batch) == 0  # second time: nothing new
        st = s.stat()
        assert (st.blocks, st.bytes) == (10, 1000)
        cid, data, _ = batch[3]
        assert s.get(cid) == data and s.has(cid)
        # v0/v1 and raw/dag-pb views of one multihash are one block.
        assert s.has(Cid(1, DAG_PB, cid.digest))
        assert s.delete(cid) and not s.has(cid)
        assert s.stat().blocks == 9


def test_put_refuses_bytes_that_do_not_match(tmp_path: Path) -> None:
    with BlockStore(tmp_path) as s, pytest.raises(CorruptBlock):
        s.put(Cid.of(RAW, b"a"), b"b")


def test_map_grows_instead_of_failing(tmp_path: Path) -> None:
    with BlockStore(tmp_path, initial_map_size_mib=1) as s:
        big = blocks(40, 128 * 1024)  # 5 MiB into a 1 MiB map
        assert s.put_many(big) == 40
        assert s.stat().map_size > 1 << 20
        assert s.get(big[-1][0]) == big[-1][1]


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    with BlockStore(tmp_path, initial_map_size_mib=1) as s:
        s.put_many(blocks(40, 128 * 1024))
    with BlockStore(tmp_path, initial_map_size_mib=1) as s:
        assert s.stat().blocks == 40


def test_missing_and_corrupt_blocks_name_the_cid(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "s") as s:
        imp = Importer(s, ImportOptions(cid_version=1, chunk_size=1024))
        root = imp.add_bytes(rnd(1, 10 * 1024)).cid  # 10 distinct leaves + root
        leaves = [Cid.from_bytes(c) for c in _links(s, root)]
        # Corrupt two leaves in place, the way a bad disk would.
        with s.env.begin(write=True) as txn:
            for c in leaves[2:4]:
                txn.put(c.multihash, b"garbage", db=s._blocks)
        with pytest.raises(CorruptBlock, match=str(leaves[2])) as e:
            Exporter(s).read_all(root)
        assert str(root) in str(e.value)
        bad = s.verify_all()
        assert sorted(map(str, bad)) == sorted(map(str, leaves[2:4]))
        # Nothing else is lost.
        for c in leaves[:2] + leaves[4:]:
            assert s.get(c)
        s.delete(leaves[0])
        with pytest.raises(BlockNotFound, match=str(leaves[0])):
            Exporter(s).read_all(root)


def _links(s: BlockStore, root: Cid) -> list[bytes]:
    with s.reader() as r:
        return r.links(root.multihash) or []


def test_pins_and_gc(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "s") as s:
        imp = Importer(s, ImportOptions(cid_version=0, chunk_size=1024))
        kept = rnd(2, 5000)
        keep = imp.add_bytes(kept).cid  # 5 leaves + root
        drop = imp.add_bytes(rnd(3, 3000)).cid  # 3 leaves + root
        single = imp.add_bytes(b"single").cid
        pins = Pins(s)
        pins.add(keep, name="dataset")
        pins.add(keep, name="other")
        pins.add(single, recursive=False)
        assert {p.cid: p.mode for p in pins.ls()} == {
            keep: PinMode.RECURSIVE, single: PinMode.DIRECT
        }
        got = pins.get(keep)
        assert got is not None and got.names == ("dataset", "other")
        assert [p.cid for p in pins.by_name("other")] == [keep]
        res = gc.collect(s)
        assert res.removed_blocks == 4 and res.kept_blocks == 7
        assert Exporter(s).read_all(keep) == kept
        assert not s.has(drop)
        # Names peel off one at a time; the pin goes with the last one.
        assert pins.rm(keep, name="dataset") is not None
        assert pins.rm(keep, name="other") is None
        with pytest.raises(NotPinned):
            pins.rm(keep)
        assert gc.collect(s).removed_blocks == 6


def test_recursive_pin_needs_the_whole_dag(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "s") as s:
        root = Importer(s, ImportOptions(chunk_size=1024)).add_bytes(rnd(4, 4096)).cid
        leaf = Cid.from_bytes(_links(s, root)[1])
        s.delete(leaf)
        with pytest.raises(BlockNotFound, match=str(leaf)):
            Pins(s).add(root)
        Pins(s).add(root, recursive=False)  # a direct pin needs only the root


def test_gc_refuses_to_run_during_an_add(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "s") as s, s.lock(exclusive=False), pytest.raises(StoreBusy):
        gc.collect(s)


def test_readonly_open_of_missing_store_fails_clearly(tmp_path: Path) -> None:
    from store.blockstore import StoreError

    with pytest.raises(StoreError, match="no block store"):
        BlockStore(tmp_path / "nope", readonly=True)
    assert lmdb.version()  # the binding is the real one


def _mapped_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    target, total, inside = str(path.resolve()), 0, False
    with open("/proc/self/smaps") as f:
        for ln in f:
            if "-" in ln.split(" ", 1)[0]:  # a mapping's header line
                inside = ln.rstrip("\n").endswith(target)
            elif inside and ln.startswith("Rss:"):
                total += int(ln.split()[1])
    return total


def test_release_of_a_span_unmaps_only_that_span(tmp_path: Path) -> None:
    """`cat` releases what it wrote and keeps what it read ahead mapped."""
    rng = random.Random(5)
    a, b = rng.randbytes(1 << 20), rng.randbytes(1 << 20)
    with BlockStore(tmp_path) as s:
        ca, cb = Cid.of(RAW, a), Cid.of(RAW, b)
        s.put_many([(ca, a, None), (cb, b, None)])
        s.release_mapped_pages()
        with s.reader() as r:
            va, vb = r.read(ca), r.read(cb)  # hash-checked: every page touched
            assert bytes(va) == a and bytes(vb) == b
            both = _mapped_kib(tmp_path / "data.mdb")
            assert both >= 2048
            lo = view_address(va)
            s.release_mapped_pages((lo, lo + len(va)))
            left = _mapped_kib(tmp_path / "data.mdb")
            assert both - left >= 1020 and left >= 1024  # a's pages gone, b's kept
            assert bytes(vb) == b and bytes(va) == a  # unmapped pages fault back in
            s.release_mapped_pages()
            assert _mapped_kib(tmp_path / "data.mdb") < 64
