"""Triggers, crons and generators on real daemons (docs/triggers.md).

Four `colony daemon` processes on 127.0.0.1. A trigger on `user:job` launches exactly
one capsule per event for events sent from every node, also after the node holding
the trigger's lease is killed with SIGKILL mid-stream (the trigger is re-placed and
catches up from its recent-events log; duplicates collapse by derived id). A cron
`@every 2s` fires once per tick; a generator of 3 events launches one capsule with
the three payloads, and one of 10 events one workflow of two capsules; bad
definitions are refused with the reason. Counting is over
the custody records of every live node: one record per (trigger, event) is the
exactly-once property.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import Cluster, colony_cmd, wait_for

pytestmark = [pytest.mark.timeout(240)]

ECHO = {"name": "job-${event.payload}", "command": ["sh", "-c", "echo $COLONY_EVENT"],
        "maxexectime_s": 30}


def _derived(nodes: list[Any], trigger_id: str) -> dict[str, set[str]]:
    """Capsule name → ids of the capsules `trigger_id` launched, over every node."""
    out: dict[str, set[str]] = {}
    for n in nodes:
        try:
            rows = n.api(10).call("GET", "/v1/capsules")
        except Exception:
            continue  # a killed node
        for r in rows:
            if r.get("trigger") == trigger_id:
                out.setdefault(r["name"], set()).add(r["id"])
    return out


def _states(nodes: list[Any], trigger_id: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in nodes:
        for r in n.api(10).call("GET", "/v1/capsules"):
            if r.get("trigger") == trigger_id and r.get("state"):
                if out.get(r["id"]) != "succeeded":
                    out[r["id"]] = r["state"]
    return out


def _send(node: Any, name: str, payload: str) -> None:
    node.api(10).call("POST", "/v1/events/send", {"name": name, "payload": payload})


@pytest.fixture(scope="module")
def colony(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Cluster(tmp_path_factory.mktemp("triggers"), 4) as c:
        c.wait_converged(timeout=60)
        yield c


def test_bad_definitions_are_refused(colony: Cluster, tmp_path: Path) -> None:
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"command": ["echo", "${event.colour}"]}))
    home = colony.nodes[0].home
    r = colony_cmd(home, "trigger", "add", "--on", "job", str(spec), check=False)
    assert r.returncode == 1 and "unknown variable ${event.colour}" in r.stderr
    spec.write_text(json.dumps(ECHO))
    r = colony_cmd(home, "trigger", "add", "--on", "job", "--filter", "name ==", str(spec),
                   check=False)
    assert r.returncode == 1 and "filter does not parse" in r.stderr
    r = colony_cmd(home, "cron", "add", "61 * * * *", str(spec), check=False)
    assert r.returncode == 1 and "minute: 61 is outside 0-59" in r.stderr


def test_one_capsule_per_event_across_a_kill(colony: Cluster, tmp_path: Path) -> None:
    n0 = colony.nodes[0]
    row = n0.api(30).call("POST", "/v1/triggers/add",
                          {"on": "user:job", "template": ECHO, "name": "per-event"})
    tid = row["id"]
    asker = [n0]  # the node asked where the trigger runs (never the one killed)

    def holder() -> str | None:
        rec = asker[0].api(10).call("GET", "/v1/triggers/get", id=tid)["record"]
        return rec["executor"] if rec["state"] in ("leased", "running") else None

    first = wait_for(holder, 60, "the trigger to be leased")
    sent: list[str] = []
    for i in range(12):
        node = colony.nodes[i % 4]
        _send(node, "job", f"a{i}")
        sent.append(f"job-a{i}")
    wait_for(lambda: set(_derived(colony.nodes, tid)) >= set(sent), 60,
             "a capsule for each of the first 12 events")
    victim = next(n for n in colony.nodes if n.peer_id == first)
    victim.kill()
    live = [n for n in colony.nodes if n is not victim]
    asker[0] = live[0]
    for i in range(12):
        _send(live[i % 3], "job", f"b{i}")
        sent.append(f"job-b{i}")
    wait_for(lambda: holder() not in (None, first), 90, "the trigger re-placed")
    wait_for(lambda: set(_derived(live, tid)) >= set(sent), 90,
             "a capsule for each of the 24 events")
    derived = _derived(live, tid)
    assert {name: len(ids) for name, ids in derived.items() if len(ids) != 1} == {}
    assert set(derived) == set(sent)
    wait_for(lambda: set(_states(live, tid).values()) == {"succeeded"}, 90,
             "every launched capsule to succeed")


def _live(colony: Cluster) -> list[Any]:
    return [n for n in colony.nodes if n.proc and n.proc.poll() is None]


def test_cron_fires_once_per_tick(colony: Cluster) -> None:
    n1 = _live(colony)[0]  # the per-event test killed one node
    tmpl = {"name": "tick-${tick}", "command": ["true"]}
    row = n1.api(30).call("POST", "/v1/triggers/add",
                          {"on": "cron", "schedule": "@every 2s", "template": tmpl})
    tid, created = row["id"], float(row["created"])
    wait_for(lambda: len(_derived(_live(colony), tid)) >= 3, 60, "three ticks' capsules",
             every=0.5)
    n1.api(30).call("POST", "/v1/triggers/rm", {"id": tid})
    removed = time.time()
    live = _live(colony)
    time.sleep(3)
    derived = _derived(live, tid)
    assert all(len(ids) == 1 for ids in derived.values())
    ticks = sorted(int(name.split("-")[1]) for name in derived)
    # Once each, consecutive, on the schedule, none before creation or after removal
    # (no count against the wall clock: bench/triggers.py measures timing).
    assert len(ticks) >= 3
    assert all(b - a == 2 for a, b in itertools.pairwise(ticks))
    assert (ticks[0] - int(created)) % 2 == 0 and created < ticks[0] and ticks[-1] <= removed


def _add_leased_generator(node: Any, on: str, count: int, template: object) -> str:
    """Add a generator through `node`; its id, once some node holds its lease."""
    tid: str = node.api(30).call("POST", "/v1/triggers/add",
                                 {"on": on, "count": count, "template": template})["id"]
    wait_for(lambda: node.api(10).call("GET", "/v1/triggers/get", id=tid)["record"]["state"]
             in ("leased", "running"), 60, "the generator to be leased")
    return tid


def test_generator_launches_one_capsule_per_batch(colony: Cluster) -> None:
    n2 = _live(colony)[-1]
    tmpl = {"name": "batch-${count}", "command": ["echo", "${payloads}"]}
    tid = _add_leased_generator(n2, "user:reading", 3, tmpl)
    for i in range(3):
        _send(n2, "reading", f"r{i}")
    wait_for(lambda: "batch-3" in _derived(_live(colony), tid), 60, "one batch")
    assert list(_derived(_live(colony), tid)) == ["batch-3"]


def test_generator_of_ten_events_launches_one_workflow(colony: Cluster) -> None:
    """ColonyOS generators: 10 events collected, then one workflow (two capsules, the
    second depending on the first) whose first capsule has the 10 payloads as input."""
    n1 = _live(colony)[0]
    wf = {"name": "batch", "capsules": [
        {"name": "collect", "command": ["echo", "${payloads}"], "maxexectime_s": 30},
        {"name": "report", "command": ["true"], "dependencies": ["collect"]}]}
    tid = _add_leased_generator(n1, "user:sample", 10, wf)
    for i in range(10):
        _send(n1, "sample", f"s{i}")
    live = _live(colony)
    wait_for(lambda: set(_derived(live, tid)) == {"collect", "report"}, 60, "one workflow")
    found = _derived(live, tid)
    assert all(len(ids) == 1 for ids in found.values()), found  # one workflow, once
    (collect,), (report,) = found["collect"], found["report"]
    wait_for(lambda: _states(live, tid).get(report) == "succeeded", 90, "the workflow's end")
    rec = n1.api(10).call("GET", "/v1/capsules/get", id=report)
    assert rec["dependencies"] == [collect], rec
    parent = n1.api(10).call("GET", "/v1/capsules/get", id=collect)
    assert json.loads(parent["command"][1]) == [f"s{i}" for i in range(10)], parent
    assert _states(live, tid)[collect] == "succeeded"
    assert rec["started"] >= parent["finished"]  # the child ran after its parent


def _publish(node: Any, topic: str, data: str) -> None:
    node.api(30).call("POST", "/v1/topics/publish", {"topic": topic, "data": data})


def test_topic_trigger_launches_one_capsule_per_message(colony: Cluster) -> None:
    """`on = topic:NAME`: the lease holder follows the topic; each message published
    from any node launches one capsule (its id derived from the signed message)."""
    live = _live(colony)
    tmpl = {"name": "msg-${event.payload}", "command": ["sh", "-c", "echo $COLONY_EVENT"]}
    row = live[0].api(30).call("POST", "/v1/triggers/add",
                               {"on": "topic:news", "template": tmpl, "name": "on-news"})
    tid = row["id"]
    wait_for(lambda: live[0].api(10).call("GET", "/v1/triggers/get", id=tid)["record"]["state"]
             in ("leased", "running"), 60, "the topic trigger to be leased")
    # Warm-up: a message launches a capsule only once the holder's subscription has
    # joined the topic's swarm (DHT rendezvous); publish until each node's first does.
    for i, node in enumerate(live):
        attempt = itertools.count()

        def fired(node: Any = node, i: int = i, attempt: Any = attempt) -> bool:
            _publish(node, "news", f"w{i}-{next(attempt)}")
            return any(name.startswith(f"msg-w{i}-") for name in _derived(live, tid))

        wait_for(fired, 60, f"a first message from node {i} to launch a capsule", every=1.0)
    sent = []
    for k in range(9):
        _publish(live[k % len(live)], "news", f"p{k}")
        sent.append(f"msg-p{k}")
    wait_for(lambda: set(_derived(live, tid)) >= set(sent), 60, "a capsule per message")
    derived = _derived(live, tid)
    assert {name: len(ids) for name, ids in derived.items() if len(ids) != 1} == {}
    ids = {next(iter(derived[name])) for name in sent}
    wait_for(lambda: all(_states(live, tid).get(i) == "succeeded" for i in ids), 90,
             "every message's capsule to succeed")
