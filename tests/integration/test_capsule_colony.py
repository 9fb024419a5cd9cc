"""Capsules on a colony of real daemons: submit from any node, custody,
executors, receipts, outputs by CID, workflows, executor and custodian crashes.

One 5-daemon colony is shared by the tests of this module (starting it costs ~15 s).
Every daemon's event stream is watched, so "exactly one accepted receipt" is checked
on what the custodians actually emitted, not on the final state alone.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from capsule_helpers import (
    EventLog,
    get,
    leader_of,
    node_by_id,
    restart,
    submit,
    wait_done,
    wait_state,
)
from colony_cluster import Cluster, colony_cmd, wait_for

pytestmark = pytest.mark.slow

EVENTS = ("ReceiptAccepted", "CapsuleFinished", "CapsuleStarted", "CapsuleRequeued",
          "CustodyTakenOver")  # fmt: skip


@pytest.fixture(scope="module")
def colony(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, EventLog]]:
    root = tmp_path_factory.mktemp("capsules")
    with Cluster(root, 5) as c:
        c.wait_converged(60)
        yield c, EventLog(c.nodes, EVENTS)


def _cat(node_home: Path, cid: str) -> str:
    colony_cmd(node_home, "fetch", cid)
    return colony_cmd(node_home, "cat", cid).stdout


def test_capsules_from_random_nodes_run_once_and_return_outputs(
    colony: tuple[Cluster, EventLog], tmp_path: Path
) -> None:
    c, events = colony
    rng = random.Random(9)
    # An input published on one node, used by capsules submitted elsewhere: the
    # executor fetches it by CID and finds it under inputs/<cid>.
    data = tmp_path / "words.txt"
    data.write_text("colony capsules\n")
    pub = json.loads(colony_cmd(c.nodes[3].home, "publish", str(data), "--json").stdout)
    in_cid = pub["cid"]

    # Through the CLI, as a user would.
    spec_file = tmp_path / "upper.toml"
    spec_file.write_text(f'''
name = "upper"
command = ["sh", "-c", "tr a-z A-Z < inputs/{in_cid} > out.txt; echo converted"]
inputs = ["{in_cid}"]
outputs = ["out.txt"]
maxexectime_s = 60
''')
    origin = c.nodes[rng.randrange(5)]
    r = colony_cmd(origin.home, "capsule", "submit", str(spec_file), "--wait", "--json")
    final = json.loads(r.stdout)
    assert final["state"] == "succeeded", final
    cli_id = final["id"]
    reader = c.nodes[(c.nodes.index(origin) + 1) % 5]
    assert _cat(reader.home, final["outputs"][0]) == "COLONY CAPSULES\n"
    logs = colony_cmd(reader.home, "capsule", "logs", cli_id).stdout
    assert "converted" in logs and "[colony] exit status 0" in logs

    # Through the API from random nodes, concurrently.
    def one(i: int) -> tuple[str, str, int]:
        node = c.nodes[rng.randrange(5)]
        spec = {"name": f"n{i}", "command": ["sh", "-c", f"echo result-{i} > r.txt"],
                "outputs": ["r.txt"], "maxexectime_s": 60}  # fmt: skip
        return submit(node, spec), f"result-{i}\n", c.nodes.index(node)

    with ThreadPoolExecutor(8) as pool:
        submitted = list(pool.map(one, range(16)))
    for cid, want, at in submitted:
        row = wait_done(c.nodes[at], cid, 60)
        assert row["state"] == "succeeded", row
        assert row["receipt_executor"] == row["executor"]
        if cid == submitted[0][0]:
            assert _cat(c.nodes[(at + 2) % 5].home, row["outputs"][0]) == want
    ids = [cid for cid, _, _ in submitted] + [cli_id]
    # Exactly one accepted receipt per capsule, as emitted by the custodians.
    wait_for(lambda: all(events.count("ReceiptAccepted")[i] >= 1 for i in ids), 10,
             "every ReceiptAccepted event")  # fmt: skip
    accepted = events.count("ReceiptAccepted")
    assert {i: accepted[i] for i in ids} == dict.fromkeys(ids, 1)
    # ps on the origin lists what it submitted.
    rows = json.loads(colony_cmd(origin.home, "capsule", "ps", "--json").stdout)
    assert cli_id in {r["id"] for r in rows}


def test_five_step_workflow_passes_data_by_cid(
    colony: tuple[Cluster, EventLog], tmp_path: Path
) -> None:
    c, _ = colony
    steps = ['[[capsules]]\nname = "s1"\ncommand = ["sh", "-c", "echo 1 > v.txt"]\n'
             'outputs = ["v.txt"]\n']  # fmt: skip
    for i in range(2, 6):
        # Each step reads its parent's output, fetched by CID and materialised as
        # inputs/<parent>/<output> (the last step through $COLONY_DEP_OUTPUTS instead),
        # and appends to it.
        src = "$COLONY_DEP_OUTPUTS" if i == 5 else f"inputs/s{i - 1}/v.txt"
        steps.append(
            f'[[capsules]]\nname = "s{i}"\ndependencies = ["s{i - 1}"]\n'
            f'command = ["sh", "-c", "cat {src} > v.txt; echo {i} >> v.txt"]\n'
            'outputs = ["v.txt"]\n'
        )
    wf = tmp_path / "chain.toml"
    wf.write_text('name = "chain"\n' + "\n".join(steps))
    # The command's timeout is a hang guard only; how long a chain takes is measured in
    # bench/capsules.py (workflow section).
    r = colony_cmd(c.nodes[2].home, "workflow", "submit", str(wf), "--wait", "--json",
                   timeout=120)  # fmt: skip
    out = json.loads(r.stdout)
    assert [x["state"] for x in out["capsules"]] == ["succeeded"] * 5, out
    last = out["capsules"][-1]
    assert last["name"] == "s5"
    assert last["dependencies"] == [out["capsules"][3]["id"]]
    assert _cat(c.nodes[4].home, last["outputs"][0]) == "1\n2\n3\n4\n5\n"


def test_executor_killed_mid_run_is_re_leased_and_finishes(
    colony: tuple[Cluster, EventLog],
) -> None:
    c, events = colony
    seed = c.nodes[0]
    spec = {"name": "slow", "command": ["sh", "-c", "sleep 3; echo done > d.txt"],
            "outputs": ["d.txt"], "maxretries": 3, "maxexectime_s": 60}  # fmt: skip
    # Keep the seed (the bootstrap address of restarts) out of the way: submit until a
    # capsule lands on another node.
    for _ in range(10):
        cid = submit(seed, spec)
        row = wait_state(seed, cid, ("running",), 30)
        if row["executor"] != seed.peer_id:
            break
    victim = node_by_id(c, row["executor"])
    victim.kill(signal.SIGKILL)
    try:
        final = wait_done(seed, cid, 60)
        assert final["state"] == "succeeded", final
        assert final["executor"] != victim.peer_id
        assert final["token"] >= 2 and final["attempts"] >= 1
        assert events.count("CapsuleRequeued")[cid] >= 1
        wait_for(lambda: events.count("ReceiptAccepted")[cid] >= 1, 10, "ReceiptAccepted")
        assert events.count("ReceiptAccepted")[cid] == 1
        assert _cat(seed.home, final["outputs"][0]) == "done\n"
    finally:
        restart(c, victim)
        events.watch(victim)


def test_leading_custodian_killed_another_takes_over(
    colony: tuple[Cluster, EventLog],
) -> None:
    c, events = colony
    seed = c.nodes[0]
    spec = {"command": ["sh", "-c", "sleep 4; echo kept > k.txt"], "outputs": ["k.txt"],
            "maxretries": 3, "maxexectime_s": 60}  # fmt: skip
    # A capsule whose leader is neither the seed, the origin nor its executor, so
    # killing the leader tests custody alone.
    chosen = None
    for i in range(12):
        cid = submit(seed, {**spec, "name": f"lead{i}"})
        row = wait_state(seed, cid, ("running",), 60)
        leader = leader_of(c, cid)
        for _ in range(10):  # a loaded machine: a node's ps may time out or lag its copy
            if leader is not None:
                break
            time.sleep(0.3)
            leader = leader_of(c, cid)
        if leader is not None and leader is not seed and leader.peer_id != row["executor"]:
            chosen = (cid, leader)
            break
    assert chosen is not None, "no capsule with a leader other than seed and executor"
    cid, leader = chosen
    leader.kill(signal.SIGKILL)
    try:
        # Known slow path (see docs/capsules.md, "Leader loss"): the takeover can wait
        # for gossip to declare the leader dead (up to ~60 s here), and a receipt the
        # executor gave up on meanwhile means one re-run, so allow for both.
        final = wait_done(seed, cid, 150)
        assert final["state"] == "succeeded", final
        wait_for(lambda: events.count("ReceiptAccepted")[cid] >= 1, 10, "ReceiptAccepted")
        assert events.count("ReceiptAccepted")[cid] == 1
        new_leader = leader_of(c, cid, skip=(leader,))
        assert new_leader is not None and new_leader is not leader
        assert _cat(seed.home, final["outputs"][0]) == "kept\n"
    finally:
        restart(c, leader)
        events.watch(leader)
    # Restarted, the old leader does not accept a second receipt.
    time.sleep(1.0)
    assert events.count("ReceiptAccepted")[cid] == 1
    assert get(seed, cid)["state"] == "succeeded"


def test_unplaceable_capsule_says_why(colony: tuple[Cluster, EventLog], tmp_path: Path) -> None:
    c, _ = colony
    spec = tmp_path / "gpu.json"
    spec.write_text(json.dumps({"funcname": "train", "maxwaittime": 2, "maxretries": 0,
                                "conditions": {"executortype": "function", "gpu": {"count": 1}}}))
    r = colony_cmd(c.nodes[1].home, "capsule", "submit", str(spec), "--wait", check=False)
    assert r.returncode == 1
    assert "no node with gpu≥1" in r.stderr + r.stdout
    assert "maxwaittime 2 s exceeded" in r.stdout


def test_logs_follow_streams_a_running_capsule_and_cancel_stops_one(
    colony: tuple[Cluster, EventLog],
) -> None:
    c, _ = colony
    origin, reader = c.nodes[3], c.nodes[4]
    spec = {"name": "talk", "maxexectime_s": 60,
            "command": ["sh", "-c", "for i in 1 2 3 4; do echo line-$i; sleep 0.5; done"]}
    cid = submit(origin, spec)
    wait_state(reader, cid, ("running", "succeeded"), 30)
    out = colony_cmd(reader.home, "capsule", "logs", cid, "--follow", timeout=60).stdout
    assert [ln for ln in out.splitlines() if ln.startswith("line-")] == [
        "line-1", "line-2", "line-3", "line-4"], out
    assert out.rstrip().endswith("[colony] exit status 0")

    long = submit(origin, {"name": "forever", "command": ["sleep", "300"]})
    wait_state(origin, long, ("running",), 30)
    r = colony_cmd(reader.home, "capsule", "cancel", long, check=False)
    assert r.returncode == 1 and "only that node or the submitter" in r.stderr
    r = colony_cmd(origin.home, "capsule", "cancel", long, "--reason", "test")
    assert "cancelled" in r.stdout
    row = get(reader, long)
    assert row["state"] == "cancelled" and "test" in row["reason"], row
