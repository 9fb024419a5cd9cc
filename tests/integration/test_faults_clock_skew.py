"""Daemons whose clocks are 5 minutes off (libfaketime), in a colony with fresh
certificates: membership converges, capsules submitted from the skewed nodes run once,
and a DAG published on one is fetched byte-identical on another.

The fault: one node's wall clock 5 min behind, one 5 min ahead (LD_PRELOAD libfaketime,
a constant offset, monotonic clocks unchanged). Certificates are issued just before
the start, so to the node that is behind they look issued in its future: before
certificates tolerated a skew, that node refused every member (docs/reliability.md).
Skipped with the reason when libfaketime is not installed (`make system-deps`).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from capsule_helpers import submit, wait_done
from colony_cluster import Cluster, colony_cmd, deterministic_bytes, wait_for

from overlay.cli.main import main as colony_main

LIB = next((p for p in (Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
                        Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
                        Path("/usr/lib/faketime/libfaketime.so.1")) if p.exists()), None)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180),
              pytest.mark.skipif(LIB is None, reason="libfaketime not installed "
                                 "(make system-deps installs the faketime package)")]


def _cli(home: Path, *args: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        rc = colony_main(["--home", str(home), *args])
    assert rc == 0, f"colony {' '.join(args)} failed: {buf.getvalue()}"
    return buf.getvalue()


def test_five_minutes_of_skew_either_way(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "c", 3)
    try:
        c.prepare()
        n0, behind, ahead = c.nodes
        _cli(n0.home, "colony", "create", "skew")
        for node in (behind, ahead):
            tok = node.home.parent / f"{node.home.name}.token"
            _cli(n0.home, "cert", "issue", node.peer_id, "--roles", "member,submit,execute",
                 "--expires", "1d", "--bootstrap", n0.addr, "--out", str(tok))
            _cli(node.home, "join", str(tok))
        n0.start()
        wait_for(n0.up, 60, "the seed")
        for node, offset in ((behind, "-300"), (ahead, "+300")):
            node.start([n0.addr], env={"LD_PRELOAD": str(LIB), "FAKETIME": offset,
                                       "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
        for node in c.nodes:
            wait_for(node.up, 60, f"{node.home.name} up")
        c.wait_converged(timeout=60)

        ids = [submit(node, {"name": f"skew-{node.home.name}",
                             "command": ["sh", "-c", "echo ok"]}) for node in c.nodes]
        for cid in ids:
            final = wait_done(n0, cid, 60)
            assert final["state"] == "succeeded", final

        data = tmp_path / "d.bin"
        data.write_bytes(deterministic_bytes(3 * 1024 * 1024, seed=5))
        r = colony_cmd(behind.home, "publish", str(data), "--json", timeout=120)
        cid = json.loads(r.stdout)["cid"]
        out = tmp_path / "got.bin"
        colony_cmd(ahead.home, "fetch", cid, "-o", str(out), timeout=120)
        assert out.read_bytes() == data.read_bytes()
    finally:
        c.close()
