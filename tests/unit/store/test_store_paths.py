"""Content paths (store/paths.py): parsing, resolution through UnixFS directories, and
every refusal (traversal, empty segments, encoded separators, limits, files, HAMT)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from overlay.core.cid import DAG_PB, RAW, Cid
from store.blockstore import BlockNotFound, BlockStore
from store.importer import Importer
from store.paths import (
    MAX_PATH_CHARS,
    MAX_PATH_DEPTH,
    PathError,
    parse_path,
    resolve,
)
from store.unixfs import (
    DataType,
    UnixFSData,
    decode_pbnode,
    decode_unixfs,
    encode_link,
    encode_node,
    encode_unixfs_full,
)

HELLO_V1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"


@pytest.fixture()
def tree(tmp_path: Path) -> Iterator[tuple[BlockStore, Cid, dict[str, Cid]]]:
    src = tmp_path / "data"
    (src / "a" / "deep").mkdir(parents=True)
    (src / "hello.txt").write_bytes(b"hello\n")
    (src / "a" / "b.txt").write_bytes(b"bee\n")
    (src / "a" / "deep" / "c.txt").write_bytes(b"sea\n")
    (src / "a" / "link").symlink_to("b.txt")
    seen: dict[str, Cid] = {}
    with BlockStore(tmp_path / "s") as store:
        imp = Importer(store, on_entry=lambda a: seen.__setitem__(a.path, a.cid))
        root = imp.add_path(src, recursive=True).cid
        yield store, root, seen


def _resolve(store: BlockStore, text: str) -> Cid:
    with store.reader() as r:
        return resolve(r, parse_path(text))


@pytest.mark.parametrize("suffix, key", [
    ("", "data"),
    ("/", "data"),
    ("/hello.txt", "data/hello.txt"),
    ("/a", "data/a"),
    ("/a/", "data/a"),
    ("/a/b.txt", "data/a/b.txt"),
    ("/a/deep/c.txt", "data/a/deep/c.txt"),
    ("/a/link", "data/a/link"),
])
def test_resolves(tree: tuple[BlockStore, Cid, dict[str, Cid]], suffix: str, key: str) -> None:
    store, root, seen = tree
    assert _resolve(store, f"{root}{suffix}") == seen[key]
    assert _resolve(store, f"/ipfs/{root}{suffix}") == seen[key]
    v0 = root.with_version(0)
    assert _resolve(store, f"{v0}{suffix}").to_v1() == seen[key].to_v1()


@pytest.mark.parametrize("suffix, msg", [
    ("/nope", "no entry nope in directory {root}"),
    ("/a/nope.txt", "no entry nope.txt in directory {root}/a"),
    ("/hello.txt/x", "{root}/hello.txt is a file, not a directory"),
    ("/a/deep/c.txt/y/z", "{root}/a/deep/c.txt is a file, not a directory"),
    ("/a/link/x", "{root}/a/link is a symlink"),
])
def test_resolution_refusals(
    tree: tuple[BlockStore, Cid, dict[str, Cid]], suffix: str, msg: str
) -> None:
    store, root, _ = tree
    with pytest.raises(PathError) as e:
        _resolve(store, f"{root}{suffix}")
    assert msg.format(root=root) in str(e.value)


@pytest.mark.parametrize("suffix, msg", [
    ("/..", "'..' is refused"),
    ("/a/../hello.txt", "'..' is refused"),
    ("/./a", "'.' is refused"),
    ("/a//b.txt", "empty segment"),
    ("//", "empty segment"),
    ("/a%2Fb.txt", "percent-encoded"),
    ("/a%2fb.txt", "percent-encoded"),
    ("/%2e%2e", "percent-encoded"),
    ("/a%5Cb", "percent-encoded"),
    ("/a%00", "percent-encoded"),
    ("/a\\b", "backslash"),
    ("/a\0b", "NUL"),
    ("/" + "x" * 256, "longer than 255 bytes"),
    ("/x" * (MAX_PATH_DEPTH + 1), f"at most {MAX_PATH_DEPTH}"),
    ("/" + "y/" * (MAX_PATH_CHARS // 2), f"at most {MAX_PATH_CHARS}"),
])
def test_parse_refusals(suffix: str, msg: str) -> None:
    with pytest.raises(PathError) as e:
        parse_path(HELLO_V1 + suffix)
    assert msg in str(e.value)


@pytest.mark.parametrize("text, msg", [
    ("/ipns/" + HELLO_V1, "expected CID/"),
    ("/" + HELLO_V1, "expected CID/"),
    ("notacid/a", "invalid CID"),
    ("", "invalid CID"),
])
def test_bad_roots(text: str, msg: str) -> None:
    with pytest.raises(PathError) as e:
        parse_path(text)
    assert msg in str(e.value)


def test_literal_percent_that_is_not_a_separator_is_a_name() -> None:
    assert parse_path(HELLO_V1 + "/100%25 done").segments == ("100%25 done",)


def _put_shard(store: BlockStore, links: list[bytes], hash_type: int = 0x22,
               fanout: int = 256) -> Cid:
    u = UnixFSData(DataType.HAMT_SHARD, b"\x01", hash_type=hash_type, fanout=fanout)
    block = encode_node(links, encode_unixfs_full(u))
    cid = Cid.of(DAG_PB, block)
    store.put(cid, block)
    return cid


def test_hamt_directories_resolve_by_hash(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    names = [f"{i:04d}-" + "n" * 100 for i in range(2700)]  # > 256 KiB estimate: sharded
    for i, n in enumerate(names):
        (src / n).write_bytes(f"{i}\n".encode())
    with BlockStore(tmp_path / "s") as store:
        top = Importer(store).add_path(src, recursive=True).cid
        with store.reader() as r:
            assert decode_unixfs(decode_pbnode(r.read(top)).data or b"").type is \
                DataType.HAMT_SHARD
        for i in (0, 1234, 2699):
            assert _resolve(store, f"{top}/{names[i]}") == Cid.of(RAW, f"{i}\n".encode())
        with pytest.raises(PathError, match=f"no entry nope in directory {top}"):
            _resolve(store, f"{top}/nope")
        with pytest.raises(PathError, match="is a file, not a directory"):
            _resolve(store, f"{top}/{names[5]}/x")
        hello = Cid.parse(HELLO_V1)
        odd = _put_shard(store, [encode_link(hello.to_bytes(), "A0hello", 6)], fanout=100)
        with pytest.raises(PathError, match="hash type 34 and fanout 100"):
            _resolve(store, f"{odd}/hello")
        other = _put_shard(store, [encode_link(hello.to_bytes(), "A0hello", 6)], hash_type=1)
        with pytest.raises(PathError, match="only murmur3-x64-64"):
            _resolve(store, f"{other}/hello")
        liar = _put_shard(store, [encode_link(hello.to_bytes(), "A0hello", 6)])  # bit 0 only
        with pytest.raises(PathError, match="not in its bitfield"):
            _resolve(store, f"{liar}/hello")


def test_missing_block_names_the_path(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "s") as store, pytest.raises(
        BlockNotFound, match="not found in the local store"
    ):
        _resolve(store, f"{HELLO_V1}/x")
