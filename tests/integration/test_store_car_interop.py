"""CAR files against an independent implementation: `@ipld/car` from npm.

`@ipld/car`, `@ipld/dag-pb` and helia's `ipfs-unixfs-importer` are installed by npm into
tests/integration/js_car/node_modules (git-ignored, reused between runs), as js_cid is.
Our `colony dag export` must be read by @ipld/car with the same root and every block
hashing as ours; a CAR written by @ipld/car (of a UnixFS file made by the js importer)
must be imported by `colony dag import` and `colony cat` must give the file's bytes.
Skipped only when node/npm are missing or the install fails (offline).
"""

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JS_DIR = Path(__file__).parent / "js_car"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def js_car() -> list[str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not installed: cannot run @ipld/car")
    if not (JS_DIR / "node_modules" / "@ipld" / "car").is_dir():
        try:
            r = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=JS_DIR, capture_output=True, text=True, timeout=300,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("npm install of @ipld/car timed out (offline?)")
        if r.returncode != 0:
            pytest.skip(f"npm install of @ipld/car failed: {r.stderr[-500:]}")
    return [node, str(JS_DIR / "car.mjs")]


def _colony(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    env = dict(os.environ, COLONY_HOME=str(home))
    r = subprocess.run([sys.executable, "-m", "overlay.cli.main", *args], env=env,
                       input=stdin, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    _colony(h, "init")
    return h


def test_our_export_read_by_ipld_car(js_car: list[str], home: Path, tmp_path: Path) -> None:
    data = random.Random(5).randbytes(3 * 262144 + 99)
    (tmp_path / "in.bin").write_bytes(data)
    root = _colony(home, "add", "-Q", str(tmp_path / "in.bin")).decode().strip()
    car = tmp_path / "ours.car"
    _colony(home, "dag", "export", root, "-o", str(car))
    r = subprocess.run([*js_car, "read", str(car)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["roots"] == [root]
    assert got["blocks"][0][0] == root and len(got["blocks"]) == 5  # 4 leaves + root
    for cid, digest in got["blocks"]:
        block = _colony(home, "block", "get", cid)
        assert hashlib.sha256(block).hexdigest() == digest


def test_ipld_car_imported_by_us(js_car: list[str], home: Path, tmp_path: Path) -> None:
    data = random.Random(6).randbytes(2 * 262144 + 7)
    (tmp_path / "in.bin").write_bytes(data)
    car = tmp_path / "js.car"
    r = subprocess.run([*js_car, "write", str(tmp_path / "in.bin"), str(car)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    root = r.stdout.strip()
    out = json.loads(_colony(home, "dag", "import", "--json", str(car)))
    assert out[0]["roots"] == [root] and out[0]["new"] == 4
    assert _colony(home, "cat", root) == data


def test_hamt_directory_from_ipld_car_read_by_us(
    js_car: list[str], home: Path, tmp_path: Path
) -> None:
    """A directory the js importer sharded (1,400 entries, above its 256 KiB threshold),
    moved as a CAR by @ipld/car: `ls`, `cat CID/name` and `get` read it, and our
    `dag export` of it holds the same blocks in the same order as the js CAR."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(1400):  # 1,400 × (190 + 36) bytes of links: above 256 KiB
        (src / f"entry-{i:05d}-{'x' * 172}.txt").write_bytes(f"entry {i}\n".encode())
    car = tmp_path / "dir.car"
    r = subprocess.run([*js_car, "write", str(src), str(car)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    root = r.stdout.strip()
    out = json.loads(_colony(home, "dag", "import", "--json", str(car)))
    assert out[0]["roots"] == [root]
    # the root is a shard: its block (Data last) ends with hashType 0x22, fanout 256
    assert _colony(home, "block", "get", root).endswith(b"\x28\x22\x30\x80\x02")
    listing = _colony(home, "ls", root).decode().splitlines()
    assert len(listing) == 1400
    name = f"entry-01234-{'x' * 172}.txt"
    assert any(line.endswith(name) for line in listing)
    assert _colony(home, "cat", f"{root}/{name}") == b"entry 1234\n"
    _colony(home, "get", root, "-o", str(tmp_path / "out"))
    got = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert got == sorted(p.name for p in src.iterdir())
    assert (tmp_path / "out" / name).read_bytes() == b"entry 1234\n"
    ours = tmp_path / "ours.car"
    _colony(home, "dag", "export", root, "-o", str(ours))
    read = [json.loads(subprocess.run([*js_car, "read", str(c)], capture_output=True,
                                      text=True, timeout=120, check=True).stdout)
            for c in (car, ours)]
    assert read[0] == read[1] and read[0]["roots"] == [root]
