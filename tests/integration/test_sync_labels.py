"""Sync labels on real daemons: push, pull elsewhere, push again, and the three
conflict rules when two nodes push from the same base (docs/sync.md).

Three `colony daemon` processes on 127.0.0.1, open mode. Trees are compared file by
file; a conflict is made by two nodes pushing changes made from the same pulled base.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import Cluster, colony_cmd

pytestmark = [pytest.mark.timeout(180)]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def sync(node_home: Path, *args: str, check: bool = True) -> dict[str, object]:
    r = colony_cmd(node_home, "sync", *args, "--json", check=check, timeout=120)
    if not check and r.returncode != 0:
        return {"error": r.stderr}
    out: dict[str, object] = json.loads(r.stdout)
    return out


def test_push_pull_and_conflicts(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", 3) as c:
        c.wait_converged(timeout=60)
        a, b, d = (n.home for n in c.nodes)
        src = tmp_path / "src"
        (src / "sub").mkdir(parents=True)
        (src / "a.txt").write_text("one\n")
        (src / "sub" / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
        first = sync(a, "push", "results", str(src))
        assert first["seq"] == 0 and first["conflict"] is None

        copy_b = tmp_path / "b"
        pulled = sync(b, "pull", "results", str(copy_b))
        assert pulled["cid"] == first["cid"] and tree(copy_b) == tree(src)
        (copy_b / "a.txt").write_text("two\n")
        second = sync(b, "push", "results", str(copy_b))  # base: what b pulled
        assert second["seq"] == 1 and second["replaced"] == first["cid"]
        st = sync(b, "status", "results", str(copy_b))
        assert st["state"] == "up to date" and st["cid"] == second["cid"]

        # a pushes from its stale base: each rule decides
        (src / "c.txt").write_text("from a\n")
        refused = sync(a, "push", "results", str(src), "--conflict", "fail", check=False)
        assert "moved from" in str(refused["error"]) and second["cid"] in str(refused["error"])
        both = sync(a, "push", "results", str(src), "--conflict", "both")
        assert both["conflict"] == "both" and both["seq"] == 2
        merged = tmp_path / "merged"
        sync(d, "pull", "results", str(merged))
        files = tree(merged)
        assert files["c.txt"] == b"from a\n" and files["a.txt"] == b"one\n"
        theirs = f".conflict-{second['cid']}"
        assert files[f"{theirs}/a.txt"] == b"two\n"  # b's version kept beside a's

        (copy_b / "d.txt").write_text("b again\n")
        newest = sync(b, "push", "results", str(copy_b), "--conflict", "keep-newest")
        assert newest["conflict"] == "keep-newest" and newest["replaced"] == both["cid"]
        final = sync(d, "status", "results")
        assert final["cid"] == newest["cid"] and final["prev"] == both["cid"]
