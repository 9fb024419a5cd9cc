"""HAMT-sharded directories (store/hamt.py): murmur3 against reference digests, the
threshold rule, and sharded trees written, listed, fetched by path, written out with
`get` and carried through a CAR — all with a real LMDB store. The CIDs themselves are
checked against helia's importer in tests/integration/test_store_cid_interop.py."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from overlay.core.cid import Cid
from store import hamt
from store.blockstore import BlockStore
from store.car import export_car, import_car
from store.exporter import BadDag, Exporter
from store.importer import Importer
from store.murmur3 import murmur3_x64_128
from store.unixfs import DataType, PBNode, UnixFSData, decode_pbnode, decode_unixfs

#: @multiformats/murmur3 (js) digests of these names, h1 ‖ h2 big-endian.
JS_DIGESTS = {
    "hello": "cbd8a7b341bd9b025b1e906a48ae1d19",
    "file0001.txt": "05592fbde746218ce05cae06d6fcf8ab",
    "ä": "e58504163c1047903832bed31148bf12",
}


@pytest.mark.parametrize(("name", "hexdigest"), JS_DIGESTS.items())
def test_murmur3_matches_the_js_hasher(name: str, hexdigest: str) -> None:
    h1, h2 = murmur3_x64_128(name.encode())
    assert (h1.to_bytes(8, "big") + h2.to_bytes(8, "big")).hex() == hexdigest


def test_murmur3_matches_the_c_extension_when_installed() -> None:
    mmh3 = pytest.importorskip("mmh3")
    rng = random.Random(3)
    for _ in range(500):
        data = rng.randbytes(rng.randrange(0, 80))
        assert murmur3_x64_128(data) == tuple(x % (1 << 64) for x in mmh3.hash64(data))


def test_slots_are_hash_bytes_then_rehashes() -> None:
    h1 = murmur3_x64_128(b"hello")[0].to_bytes(8, "big")
    assert [hamt.lookup_index(b"hello", i) for i in range(8)] == list(h1)
    again = murmur3_x64_128(b"hello\x01")[0].to_bytes(8, "big")
    assert hamt.lookup_index(b"hello", 8) == again[0]  # InfiniteHash: name ‖ depth
    assert hamt.lookup_index(b"hello", 0, bits=4) == h1[0] >> 4
    assert hamt.bitfield([0, 9]) == b"\x02\x01" and hamt.bitfield([3]) == b"\x08"


def test_threshold_counts_utf16_units_and_skips_directories() -> None:
    cid = Cid.parse("bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am")
    entries = [(f"{i:04d}" + "é" * 120, cid, 1) for i in range(1638)]
    assert not hamt.should_shard(entries, frozenset(), 1)  # 262,080 ≤ 262,144
    assert hamt.should_shard([*entries, ("x" * 124, cid, 1)], frozenset(), 1)
    assert not hamt.should_shard([*entries, ("d" * 124, cid, 1)], frozenset({"d" * 124}), 1)


@pytest.fixture()
def sharded(tmp_path: Path) -> tuple[Path, list[str]]:
    src = tmp_path / "big"
    src.mkdir()
    names = [f"entry-{i:05d}-" + "x" * 80 for i in range(3000)]
    for i, n in enumerate(names):
        (src / n).write_bytes(f"{i}\n".encode())
    (src / "sub").mkdir()
    (src / "sub" / "inner.txt").write_bytes(b"inner\n")
    return src, [*names, "sub"]


def test_sharded_trees_list_and_round_trip(sharded: tuple[Path, list[str]],
                                           tmp_path: Path) -> None:
    src, names = sharded
    with BlockStore(tmp_path / "s") as store:
        root = Importer(store).add_path(src, recursive=True).cid
        with store.reader() as r:
            u = decode_unixfs(decode_pbnode(r.read(root)).data or b"")
        assert u.type is DataType.HAMT_SHARD and u.fanout == 256 and u.hash_type == 0x22
        ex = Exporter(store)
        listed = ex.ls(root)
        assert [e.name for e in listed] == sorted(names, key=str.encode)
        assert {e.kind for e in listed} == {"file", "directory"}
        assert ex.stat(root).kind == "directory"
        out = tmp_path / "out"
        ex.get(root, out)
        assert sorted(p.name for p in out.iterdir()) == sorted(names)
        assert (out / names[1234]).read_bytes() == b"1234\n"
        assert (out / "sub" / "inner.txt").read_bytes() == b"inner\n"
        car = io.BytesIO()
        export_car(store, root, car.write)
    with BlockStore(tmp_path / "fresh") as fresh:
        car.seek(0)
        import_car(fresh, car)
        assert [e.name for e in Exporter(fresh).ls(root)] == sorted(names, key=str.encode)


def test_malformed_shards_are_refused_by_name(tmp_path: Path) -> None:
    from overlay.core.cid import DAG_PB
    from store.unixfs import UnixFSData, encode_link, encode_node, encode_unixfs_full

    with BlockStore(tmp_path / "s") as store:
        leaf = Cid.parse("bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am")
        store.put(leaf, b"hello\n")
        slot = hamt.lookup_index(b"a", 0)
        good, wrong = f"{slot:02X}a", f"{(slot + 1) % 256:02X}a"
        other = 3 if slot != 3 else 4
        for data, links, why in [
            (hamt.bitfield([slot ^ 1]), [encode_link(leaf.to_bytes(), good, 6)],
             "not in its bitfield"),
            (hamt.bitfield([slot, other]), [encode_link(leaf.to_bytes(), good, 6)], "disagree"),
            (hamt.bitfield([slot]), [encode_link(leaf.to_bytes(), "zz", 6)], "no slot prefix"),
            (hamt.bitfield([(slot + 1) % 256]), [encode_link(leaf.to_bytes(), wrong, 6)],
             "not where its hash puts it"),
        ]:
            u = UnixFSData(DataType.HAMT_SHARD, data, hash_type=0x22, fanout=256)
            block = encode_node(links, encode_unixfs_full(u))
            cid = Cid.of(DAG_PB, block)
            store.put(cid, block)
            with pytest.raises(BadDag, match=why):
                Exporter(store).ls(cid)


def test_hostile_shard_trees_are_refused(tmp_path: Path) -> None:
    """A sub-shard of another fanout, and one sub-shard linked under two slots (a DAG
    bomb: each visit would list its entries again), are refused by name; a lookup
    refuses the fanout change on its path too."""
    from overlay.core.cid import DAG_PB
    from store.unixfs import UnixFSData, encode_link, encode_node, encode_unixfs_full

    def shard(store: BlockStore, links: list[tuple[int, str, Cid]], fanout: int = 256) -> Cid:
        pad = len(f"{fanout - 1:X}")
        u = UnixFSData(DataType.HAMT_SHARD, hamt.bitfield([s for s, _, _ in links]),
                       hash_type=0x22, fanout=fanout)
        block = encode_node([encode_link(c.to_bytes(), f"{s:0{pad}X}{n}", 6)
                             for s, n, c in links], encode_unixfs_full(u))
        cid = Cid.of(DAG_PB, block)
        store.put(cid, block)
        return cid

    with BlockStore(tmp_path / "s") as store:
        leaf = Cid.parse("bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am")
        store.put(leaf, b"hello\n")
        top = hamt.lookup_index(b"a", 0)
        narrow = shard(store, [(hamt.lookup_index(b"a", 1, 4), "a", leaf)], fanout=16)
        mixed = shard(store, [(top, "", narrow)])
        with pytest.raises(BadDag, match="fanout 16 under a shard of fanout 256"):
            Exporter(store).ls(mixed)
        with pytest.raises(hamt.HamtError, match="fanout 16 under a shard of fanout 256"):
            hamt.find(lambda c: _read(store, c), mixed, "a")
        sub = shard(store, [(hamt.lookup_index(b"a", 1), "a", leaf)])
        bomb = shard(store, [(top, "", sub), ((top + 1) % 256, "", sub)])
        with pytest.raises(BadDag, match="twice"):
            Exporter(store).ls(bomb)


def _read(store: BlockStore, cid: Cid) -> tuple[PBNode, UnixFSData]:
    block = store.get(cid)
    assert block is not None
    node = decode_pbnode(bytes(block))
    return node, decode_unixfs(node.data or b"")
