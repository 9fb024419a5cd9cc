"""A full disk is a clear error, loses nothing stored, and the node works again once
space is freed: a home on a 64 MiB tmpfs the test mounts (root only).

- `colony add` of a file larger than the disk: exit 1 with the reason, no traceback;
  the store verifies; after the tmpfs grows, the same add resumes and `get` gives the same bytes.
- a daemon fetching a DAG larger than its disk: the fetch fails with the reason, the
  daemon stays up and keeps serving; after the tmpfs grows, the fetch completes and
  the bytes match.

Before the fix, `add` died with `lmdb.Error: mdb_txn_commit: Input/output error`
(LMDB reports a short page write on a full tmpfs as EIO).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from colony_cluster import Cluster, Node, colony_cmd, deterministic_bytes, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                       reason="mounting a tmpfs needs root"),
]

MIB = 1 << 20
DISK = "64m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _grow(mnt: Path, size: str = "512m") -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)


def test_add_on_a_full_disk_is_a_clear_error_and_resumes(small_disk: Path,
                                                          tmp_path: Path) -> None:
    home = small_disk / "home"
    colony_cmd(home, "init")
    data = deterministic_bytes(96 * MIB, seed=7)
    big = tmp_path / "big.bin"  # outside the small disk
    big.write_bytes(data)

    r = colony_cmd(home, "add", str(big), check=False, timeout=300)
    assert r.returncode == 1, r.stdout
    assert "disk holding the block store" in r.stderr and "is full" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr

    verify = colony_cmd(home, "repo", "verify", "--json")  # intact: no corrupt block
    assert json.loads(verify.stdout)["corrupt"] == [], verify.stdout

    _grow(small_disk)
    cid = colony_cmd(home, "add", "-Q", str(big), timeout=300).stdout.strip()
    got = tmp_path / "got.bin"
    colony_cmd(home, "get", cid, "-o", str(got), timeout=300)
    assert got.read_bytes() == data


def test_a_fetch_onto_a_full_disk_fails_clearly_and_the_daemon_lives(
    small_disk: Path, tmp_path: Path
) -> None:
    c = Cluster(tmp_path / "colony", 2)
    c.nodes[1] = Node(small_disk / "n01")  # the fetcher's home is on the small disk
    data = deterministic_bytes(96 * MIB, seed=8)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    with c:
        c.wait_converged(60)
        a, b = c.nodes
        cid = json.loads(colony_cmd(a.home, "publish", str(src), "--json",
                                    timeout=300).stdout)["cid"]
        out = tmp_path / "fetched.bin"
        r = colony_cmd(b.home, "fetch", cid, "-o", str(out), timeout=300, check=False)
        assert r.returncode != 0, r.stdout
        # On failure, the fetcher's log tail too: a loaded run once ended this stream
        # with no error line (stops 38 and 39), cause not yet known.
        assert "is full" in r.stderr + r.stdout, (
            r.stderr + r.stdout + "\nfetcher log:\n" + b.log.read_text(errors="replace")[-4000:])
        assert b.up()  # the daemon survived
        assert json.loads(colony_cmd(b.home, "repo", "verify", "--json").stdout)["corrupt"] == []

        _grow(small_disk)
        wait_for(b.up, 30, "the fetcher's API")
        r = colony_cmd(b.home, "fetch", cid, "-o", str(out), timeout=300)
        assert out.read_bytes() == data
