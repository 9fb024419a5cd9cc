"""Importer CIDs against known vectors (cross-checked with the js reference importer,
see tests/integration/test_store_cid_interop.py) and exporter round trips."""

import io
import os
import random
from pathlib import Path

import pytest

from overlay.core.cid import DAG_PB, RAW, Cid
from store.blockstore import BlockStore
from store.exporter import BadDag, Exporter, NotAFile
from store.importer import Importer, ImportOptions, ImportPathError
from store.unixfs import DataType, decode_pbnode, decode_unixfs

CHUNK = 262144


def data(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


FILES = {
    "empty": b"",
    "one-byte": b"a",
    "hello": b"hello\n",
    "one-chunk": data(1, CHUNK),
    "chunk-plus-one": data(2, CHUNK + 1),
    "full-level": data(3, 174 * CHUNK),
    "two-levels": data(4, 174 * CHUNK + 1),
}

# Agreed by kubo-compatible js importer (ipfs-unixfs-importer 15.4) and ours.
V0 = {
    "empty": "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
    "one-byte": "QmfDmsHTywy6L9Ne5RXsj5YumDedfBLMvCvmaxjBoe6w4d",
    "hello": "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN",
    "one-chunk": "QmWgMfhaKh53M687zawUTGwqJUTfEkG6cXMNkPqmGsrN8o",
    "chunk-plus-one": "QmRuUbKc26H4EgUsPNTnkbxX1USYwrs25abhsowKCSibXZ",
    "full-level": "QmaD2UzuY4eMLVzYu3Di35DFUg9DY7eToXFreeh3cv3bW4",
    "two-levels": "QmauMpSytWr11PxKPbL1EtrRpQwqs14oir3Bf7YM2PpY42",
    "tree": "QmdUwvFwXcnKbeFda7498E6Vn4URqSmArimmGnU9WhDKZp",
}
V1 = {
    "empty": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    "one-byte": "bafkreigks6arfsq3xxfpvqrrwonchxcnu6do76auprhhfomao6c273sixm",
    "hello": "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am",
    "one-chunk": "bafkreid67dntoks4pszm6rx672d62nxiwptqojd5zv4nhc5osehnmqld64",
    "chunk-plus-one": "bafybeierkjfp3gikhok7e3uw76jqrwbiugazgobf3unah546bhw5atsl4q",
    "full-level": "bafybeih5rgqakij5iuz2qc7immnamvuclypfmxrciqthv2rvgyrvrav53a",
    "two-levels": "bafybeienzvcocqdeijazlxxa5b6hnrdtvsyr5xd45sj4hxjr72apze4ob4",
    "tree": "bafybeihqoq4fdedk6paygq6gwh6l2qjsivdsfik6qyvjm6kazqfpzhbe74",
}


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "a").write_bytes(b"A\n")
    (root / "B").write_bytes(b"")
    (root / "a b").write_bytes(data(5, 1000))
    (root / "\u00e4.txt").write_bytes(b"umlaut\n")
    (root / "sub" / "big.bin").write_bytes(data(6, 3 * CHUNK + 7))
    (root / "sub" / "deeper" / "leaf.txt").write_bytes(b"leaf\n")


@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("version", [0, 1])
def test_file_cids_match_ipfs_add(name: str, version: int) -> None:
    imp = Importer(None, ImportOptions(cid_version=version))
    got = imp.add_bytes(FILES[name])
    assert str(got.cid) == (V0 if version == 0 else V1)[name]
    assert got.size == len(FILES[name])
    # Streaming through a reader that returns short reads gives the same CID.
    assert imp.add_stream(_Trickle(FILES[name])).cid == got.cid


class _Trickle(io.RawIOBase):
    """A pipe-like source that never returns more than 1000 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(min(n, 1000) if n > 0 else 1000)


@pytest.mark.parametrize("version", [0, 1])
def test_nested_directory_cid_matches_ipfs_add(tmp_path: Path, version: int) -> None:
    make_tree(tmp_path / "tree")
    got = Importer(None, ImportOptions(cid_version=version)).add_path(
        tmp_path / "tree", recursive=True
    )
    assert str(got.cid) == (V0 if version == 0 else V1)["tree"]


def test_dag_shape_of_two_level_file(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "s") as store:
        root = Importer(store, ImportOptions(cid_version=1)).add_bytes(FILES["two-levels"]).cid
        node = decode_pbnode(store.get(root))
        u = decode_unixfs(node.data or b"")
        # 175 chunks: a full node of 174 leaves, then a node wrapping the last one.
        assert len(node.links) == 2 and u.blocksizes == (174 * CHUNK, 1)
        assert u.filesize == 174 * CHUNK + 1 and u.type is DataType.FILE
        second = decode_pbnode(store.get(Cid.from_bytes(node.links[1].hash)))
        assert len(second.links) == 1
        assert Cid.from_bytes(second.links[0].hash).codec == RAW
        assert all(lk.name == "" for lk in node.links)


@pytest.mark.parametrize("version", [0, 1])
def test_import_export_round_trip(tmp_path: Path, version: int) -> None:
    make_tree(tmp_path / "tree")
    with BlockStore(tmp_path / "s") as store:
        imp = Importer(store, ImportOptions(cid_version=version))
        root = imp.add_path(tmp_path / "tree", recursive=True)
        ex = Exporter(store)
        names = [e.name for e in ex.ls(root.cid)]
        assert names == sorted(names, key=lambda n: n.encode())
        ex.get(root.cid, tmp_path / "out")
        for p in (tmp_path / "tree").rglob("*"):
            q = tmp_path / "out" / p.relative_to(tmp_path / "tree")
            assert q.is_dir() if p.is_dir() else q.read_bytes() == p.read_bytes()
        big = imp.add_bytes(FILES["two-levels"]).cid
        assert ex.read_all(big) == FILES["two-levels"]
        assert ex.stat(big).size == len(FILES["two-levels"])


def test_symlinks_inside_directories_are_stored_as_symlinks(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "target.txt").write_bytes(b"t")
    os.symlink("target.txt", d / "link")
    os.symlink("loop", d / "loop")  # a loop is harmless: it is not followed
    with BlockStore(tmp_path / "s") as store:
        root = Importer(store).add_path(d, recursive=True)
        ex = Exporter(store)
        kinds = {e.name: e.kind for e in ex.ls(root.cid)}
        assert kinds == {"link": "symlink", "loop": "symlink", "target.txt": "file"}
        ex.get(root.cid, tmp_path / "out")
        assert os.readlink(tmp_path / "out" / "link") == "target.txt"
        with pytest.raises(NotAFile, match="symlink"):
            ex.read_all(next(e.cid for e in ex.ls(root.cid) if e.name == "link"))


def test_bad_paths(tmp_path: Path) -> None:
    imp = Importer(None)
    with pytest.raises(ImportPathError, match="no such file"):
        imp.add_path(tmp_path / "missing")
    (tmp_path / "dir").mkdir()
    with pytest.raises(ImportPathError, match="use -r"):
        imp.add_path(tmp_path / "dir")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ImportPathError, match="FIFO"):
        imp.add_path(tmp_path / "fifo")
    os.symlink(tmp_path / "l2", tmp_path / "l1")
    os.symlink(tmp_path / "l1", tmp_path / "l2")
    with pytest.raises(ImportPathError, match="l1"):
        imp.add_path(tmp_path / "l1")


def test_cat_of_directory_and_bad_names_in_foreign_dags(tmp_path: Path) -> None:
    from store.unixfs import encode_link, encode_node, encode_unixfs

    with BlockStore(tmp_path / "s") as store:
        imp = Importer(store)
        f = imp.add_bytes(b"x").cid
        d = imp.directory([("x", f, 1)]).cid
        imp.flush()
        with pytest.raises(NotAFile, match="directory"):
            Exporter(store).read_all(d)
        # A peer-made directory with a "../" entry must never be written outside -o.
        evil = encode_node([encode_link(f.to_bytes(), "..", 1)],
                           encode_unixfs(DataType.DIRECTORY))
        ecid = Cid.of(DAG_PB, evil)
        store.put(ecid, evil)
        with pytest.raises(BadDag, match="unsafe name"):
            Exporter(store).get(ecid, tmp_path / "out")
        assert not (tmp_path / "x").exists()


def test_file_whose_sizes_lie_is_rejected(tmp_path: Path) -> None:
    from store.unixfs import encode_link, encode_node, encode_unixfs

    with BlockStore(tmp_path / "s") as store:
        leaf = Importer(store).add_bytes(b"abc").cid
        liar = encode_node([encode_link(leaf.to_bytes(), "", 3)],
                           encode_unixfs(DataType.FILE, b"", 5, [5]))
        lcid = Cid.of(DAG_PB, liar)
        store.put(lcid, liar)
        with pytest.raises(BadDag, match="3 bytes"):
            Exporter(store).read_all(lcid)
