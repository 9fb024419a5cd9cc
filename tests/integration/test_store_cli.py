"""The store commands as a user runs them: real `colony` subprocesses on a temp node."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

pytestmark = pytest.mark.slow
HELLO_V0 = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
HELLO_V1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"


def colony(
    home: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "COLONY_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "overlay.cli.main", *args],
        env=env, capture_output=True, timeout=120, input=stdin,
    )


def out(r: subprocess.CompletedProcess[bytes]) -> str:
    return r.stdout.decode()


@pytest.fixture()
def node(tmp_path: Path) -> Path:
    home = tmp_path / "node"
    assert colony(home, "init").returncode == 0
    return home


def test_store_commands_need_init(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"hello\n")
    for args in (("add", str(tmp_path / "f")), ("cat", HELLO_V1), ("repo", "stat")):
        r = colony(tmp_path / "nothing", *args)
        assert r.returncode == 1 and b"colony init" in r.stderr
    # Only computing a CID needs no node.
    r = colony(tmp_path / "nothing", "add", "-n", "-Q", "--cid-version", "0", str(tmp_path / "f"))
    assert r.returncode == 0 and out(r).strip() == HELLO_V0


def test_add_cat_ls_get_pin_gc_round_trip(node: Path, tmp_path: Path) -> None:
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "hello.txt").write_bytes(b"hello\n")
    big = random.Random(1).randbytes(600_000)
    (src / "sub" / "big.bin").write_bytes(big)
    r = colony(node, "add", "-r", str(src))
    assert r.returncode == 0, r.stderr
    lines = out(r).splitlines()
    assert lines[0] == f"added {HELLO_V1} data/hello.txt"
    root = lines[-1].split()[1]
    assert lines[-1] == f"added {root} data"
    assert out(colony(node, "cat", HELLO_V1)) == "hello\n"
    ls = json.loads(out(colony(node, "ls", "--json", root)))
    assert [(e["name"], e["type"]) for e in ls["entries"]] == [
        ("hello.txt", "file"), ("sub", "directory")]
    assert colony(node, "get", root, "-o", str(tmp_path / "copy")).returncode == 0
    assert (tmp_path / "copy" / "sub" / "big.bin").read_bytes() == big
    pins = json.loads(out(colony(node, "pin", "ls", "--json")))["pins"]
    assert [p["cid"] for p in pins] == [root]
    stat = json.loads(out(colony(node, "repo", "stat", "--json")))
    assert stat["blocks"] == 7  # hello, 3 leaves + 1 file root, 2 directories
    # Unpinned content goes at gc; pinned content stays.
    assert colony(node, "add", "--no-pin", "-Q", str(src / "hello.txt")).returncode == 0
    r = colony(node, "pin", "rm", root)
    assert r.returncode == 0
    r = colony(node, "pin", "add", "--name", "keep", HELLO_V1)
    assert r.returncode == 0
    g = json.loads(out(colony(node, "gc", "--json")))
    assert g["removed_blocks"] == 6 and g["kept_blocks"] == 1
    assert out(colony(node, "cat", HELLO_V1)) == "hello\n"
    # The same bytes as CIDv0: a dag-pb leaf, kubo's default CID.
    r = colony(node, "add", "-Q", "--cid-version", "0", str(src / "hello.txt"))
    assert out(r).strip() == HELLO_V0


def test_block_commands(node: Path) -> None:
    r = colony(node, "block", "put", "-", stdin=b"hello\n")
    assert out(r).strip() == HELLO_V1
    assert colony(node, "block", "get", HELLO_V1).stdout == b"hello\n"
    st = json.loads(out(colony(node, "block", "stat", "--json", HELLO_V1)))
    assert st == {"cid": HELLO_V1, "size": 6}
    r = colony(node, "block", "put", "--format", "dag-pb", "-", stdin=b"\xff\xff")
    assert r.returncode == 1 and b"not a valid dag-pb block" in r.stderr
    assert colony(node, "pin", "add", "--direct", HELLO_V1).returncode == 0
    r = colony(node, "block", "rm", HELLO_V1)
    assert r.returncode == 1 and b"pinned" in r.stderr
    assert colony(node, "pin", "rm", HELLO_V1).returncode == 0
    assert colony(node, "block", "rm", HELLO_V1).returncode == 0
    r = colony(node, "block", "get", HELLO_V1)
    assert r.returncode == 1 and HELLO_V1.encode() in r.stderr


def test_bad_cids_and_missing_blocks(node: Path) -> None:
    r = colony(node, "cat", "not-a-cid")
    assert r.returncode == 1 and b"invalid CID 'not-a-cid'" in r.stderr
    r = colony(node, "cat", HELLO_V0)
    assert r.returncode == 1 and f"block {HELLO_V0} not found".encode() in r.stderr
    r = colony(node, "ls", HELLO_V1)
    assert r.returncode == 1 and HELLO_V1.encode() in r.stderr


def test_corrupt_blocks_are_named_and_all_listed(node: Path, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(random.Random(2).randbytes(5 * 262144))
    root = out(colony(node, "add", "-Q", str(f))).strip()
    keep = tmp_path / "keep"
    keep.write_bytes(b"unrelated\n")
    other = out(colony(node, "add", "-Q", str(keep))).strip()
    # Flip bytes of two leaves directly in LMDB (what a bad disk does).
    env = lmdb.open(str(node / "blocks"), max_dbs=8)
    blocks = env.open_db(b"blocks")
    refs = env.open_db(b"refs")
    from overlay.core.cid import Cid
    from store.blockstore import decode_links

    with env.begin(write=True) as txn:
        links = txn.get(Cid.parse(root).multihash, db=refs)
        assert links is not None
        leaves = [Cid.from_bytes(c) for c in decode_links(links)]
        for c in leaves[1:3]:
            block = txn.get(c.multihash, db=blocks)
            assert block is not None
            val = bytearray(block)
            val[100] ^= 0xFF
            txn.put(c.multihash, bytes(val), db=blocks)
    env.close()
    r = colony(node, "cat", root)
    assert r.returncode == 1
    assert f"block {leaves[1]} is corrupt".encode() in r.stderr and root.encode() in r.stderr
    r = colony(node, "repo", "verify")
    assert r.returncode == 1
    bad = sorted(line.split()[1] for line in out(r).splitlines() if line.startswith("block "))
    assert bad == sorted(str(c) for c in leaves[1:3])
    j = json.loads(out(colony(node, "repo", "verify", "--json")))
    assert j["checked"] == 7 and sorted(j["corrupt"]) == bad
    # Nothing else is lost.
    assert out(colony(node, "cat", other)) == "unrelated\n"


def test_bad_paths_fail_with_clear_errors(node: Path, tmp_path: Path) -> None:
    r = colony(node, "add", str(tmp_path / "missing"))
    assert r.returncode == 1 and b"no such file or directory" in r.stderr
    os.mkfifo(tmp_path / "fifo")
    r = colony(node, "add", str(tmp_path / "fifo"))
    assert r.returncode == 1 and b"FIFO" in r.stderr
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    r = colony(node, "add", str(tmp_path / "a"))
    assert r.returncode == 1 and b"symbolic links" in r.stderr
    (tmp_path / "d").mkdir()
    r = colony(node, "add", str(tmp_path / "d"))
    assert r.returncode == 1 and b"use -r" in r.stderr
    # A FIFO inside a tree stops the add with its path; the store stays usable.
    (tmp_path / "d" / "ok").write_bytes(b"ok")
    os.mkfifo(tmp_path / "d" / "pipe")
    r = colony(node, "add", "-r", str(tmp_path / "d"))
    assert r.returncode == 1 and b"pipe" in r.stderr
    assert colony(node, "repo", "verify").returncode == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(node: Path, tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_bytes(b"x")
    f.chmod(0)
    r = colony(node, "add", str(f))
    assert r.returncode == 1 and b"Permission denied" in r.stderr


def test_paths_in_cat_ls_get(node: Path, tmp_path: Path) -> None:
    src = tmp_path / "data"
    (src / "sub" / "inner").mkdir(parents=True)
    (src / "sub" / "file.txt").write_bytes(b"in a path\n")
    (src / "sub" / "inner" / "x").write_bytes(b"x\n")
    r = colony(node, "add", "-r", "-Q", str(src))
    assert r.returncode == 0, r.stderr
    root = out(r).strip()
    for form in (f"{root}/sub/file.txt", f"/ipfs/{root}/sub/file.txt"):
        r = colony(node, "cat", form)
        assert r.returncode == 0 and r.stdout == b"in a path\n", r.stderr
    r = colony(node, "ls", "--json", f"{root}/sub")
    assert r.returncode == 0, r.stderr
    assert sorted(e["name"] for e in json.loads(out(r))["entries"]) == ["file.txt", "inner"]
    r = colony(node, "get", f"{root}/sub", "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "file.txt").read_bytes() == b"in a path\n"
    assert (tmp_path / "out" / "inner" / "x").read_bytes() == b"x\n"
    for args, msg in (
        (("cat", f"{root}/sub/nope"), f"no entry nope in directory {root}/sub"),
        (("ls", f"{root}/sub/file.txt/x"), f"{root}/sub/file.txt is a file, not a directory"),
        (("cat", f"{root}/../etc/passwd"), "'..' is refused"),
        (("cat", f"{root}/sub%2Ffile.txt"), "percent-encoded"),
        (("get", f"{root}//sub"), "empty segment"),
    ):
        r = colony(node, *args)
        assert r.returncode == 1 and msg in r.stderr.decode(), (args, r.stderr)


def test_identity_cids_need_no_block_nor_node(node: Path, tmp_path: Path) -> None:
    for home in (node, tmp_path / "nothing"):
        r = colony(home, "cat", "bafkqabtimvwgy3yk")  # raw identity CID of b"hello\n"
        assert r.returncode == 0 and r.stdout == b"hello\n", r.stderr
    r = colony(node, "get", "k10vj2didmfdtj4a", "-o", str(tmp_path / "h"))
    assert r.returncode == 0 and (tmp_path / "h").read_bytes() == b"hello\n", r.stderr
    r = colony(node, "block", "get", "bafkqabtimvwgy3yk")
    assert r.returncode == 0 and r.stdout == b"hello\n", r.stderr
    blake3 = "bafkr4iaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    r = colony(node, "cat", blake3)
    assert r.returncode == 1 and b"cannot verify multihash 0x1e (blake3)" in r.stderr, r.stderr


def test_add_block_put_and_pin_add_print_json(node: Path, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"hello\n")
    added = json.loads(out(colony(node, "add", "-r", "--json", str(tmp_path / "d"))))
    assert [e["path"] for e in added["entries"]] == ["d/a.txt", "d"]
    assert added["roots"] == [added["entries"][-1]["cid"]]
    assert added["entries"][0]["kind"] == "file" and added["entries"][0]["size"] == 6
    put = json.loads(out(colony(node, "block", "put", "--json", str(tmp_path / "d" / "a.txt"))))
    assert put["size"] == 6
    pins = json.loads(out(colony(node, "pin", "add", "--json", put["cid"])))
    assert pins == [{"cid": put["cid"], "mode": "recursive"}]
