"""Sync labels on real daemons: push, pull elsewhere, push again, and the three
conflict rules when two nodes push from the same base; capsules' sync directives: a
workflow of three capsules growing one directory through a label, and two concurrent
capsules pushing one label under `conflict = "fail"` (docs/sync.md).

Three `colony daemon` processes on 127.0.0.1, open mode. Trees are compared file by
file; a conflict is made by two nodes pushing changes made from the same pulled base.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def colony(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("sync"), 3) as c:
        c.wait_converged(timeout=60)
        yield c


def test_push_pull_and_conflicts(colony: Cluster, tmp_path: Path) -> None:
    a, b, d = (n.home for n in colony.nodes)
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
    assert "moved from" in str(refused["error"]) and str(second["cid"]) in str(refused["error"])
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


def test_a_workflow_grows_a_directory_through_a_label(colony: Cluster, tmp_path: Path) -> None:
    step = {"command": ["sh", "-c", "echo $STEP >> data/log.txt"],
            "sync": [{"label": "grow", "dir": "data"}], "maxexectime_s": 60}
    wf = {"name": "grow", "capsules": [
        {**step, "name": "s1", "env": {"STEP": "one"}},
        {**step, "name": "s2", "env": {"STEP": "two"}, "dependencies": ["s1"]},
        {**step, "name": "s3", "env": {"STEP": "three"}, "dependencies": ["s2"]}]}
    home = colony.nodes[0].home
    spec = tmp_path / "wf.json"
    spec.write_text(json.dumps(wf))
    colony_cmd(home, "workflow", "submit", str(spec), "--wait", timeout=150)
    out = tmp_path / "grown"
    sync(colony.nodes[2].home, "pull", "grow", str(out))
    assert (out / "log.txt").read_text() == "one\ntwo\nthree\n"


def test_concurrent_capsules_follow_the_fail_rule(colony: Cluster) -> None:
    node = colony.nodes[1]
    api = node.api(60)
    spec = {"command": ["sh", "-c", "echo $WHO > d/who.txt; sleep 2"], "maxretries": 0,
            "sync": [{"label": "race", "dir": "d", "conflict": "fail"}], "maxexectime_s": 60}
    ids = [api.call("POST", "/v1/capsules/submit",
                    {"spec": {**spec, "env": {"WHO": who}}})["id"] for who in ("x", "y")]
    finals = []
    for cid in ids:
        final = {}
        for item in api.stream("GET", "/v1/capsules/wait", id=cid, timeout="120"):
            final = item
        finals.append(final)
    states = sorted(f["state"] for f in finals)
    assert states == ["failed", "succeeded"], finals
    loser = next(f for f in finals if f["state"] == "failed")
    assert loser["exit_status"] == -6 and "moved from" in str(loser["reason"])
