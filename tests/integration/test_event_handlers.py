"""`[handlers]` scripts on a real daemon: joins, a graceful leave and user events.

Three `colony daemon` processes on 127.0.0.1; node 0's config.toml runs a recording
script on member-join, member-leave, user:deploy and topic:news, and `sleep 600`
(timeout 1 s) on user:slow. Each event must run its script exactly once with the
right environment and stdin; the slow script is killed, counted in /v1/stats drops,
and the node goes on.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import Cluster, colony_cmd, wait_for

pytestmark = [pytest.mark.timeout(120)]

RECORD = ('d="$COLONY_HOME/../events"; mkdir -p "$d"; f="$d/$(date +%s%N)-$COLONY_EVENT"; '
          'env | grep -E "^(COLONY|SERF)_" | sort > "$f.env"; cat > "$f.in"')


def _records(root: Path) -> list[tuple[dict[str, str], bytes]]:
    d = root / "events"
    if not d.exists():
        return []
    out = []
    for env_file in sorted(d.glob("*.env")):
        stdin = env_file.with_suffix(".in")
        if not stdin.exists():
            continue  # still being written
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        out.append((env, stdin.read_bytes()))
    return out


def test_handlers_run_once_per_event_with_serf_env(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 3)
    try:
        c.prepare()
        conf = c.nodes[0].home / "config.toml"
        scripts = [f"member-join,member-leave,user:deploy,user:local={RECORD}",
                   "user:slow=sleep 600", f"topic:news={RECORD}"]
        conf.write_text(conf.read_text().replace(
            "scripts = []", f"scripts = {json.dumps(scripts)}").replace(
            "timeout_s = 60", "timeout_s = 1"))
        c.launch()
        c.wait_converged(timeout=60)
        n0, n1, n2 = c.nodes

        def kinds() -> list[str]:
            return [env["COLONY_EVENT"] for env, _ in _records(tmp_path)]

        wait_for(lambda: kinds().count("member-join") >= 2, 30, "two member-join handler runs")
        joined = {stdin.split(b"\t")[0].decode() for env, stdin in _records(tmp_path)
                  if env["COLONY_EVENT"] == "member-join"}
        assert joined == {n1.peer_id, n2.peer_id}

        colony_cmd(n0.home, "events", "send", "local", "mine")  # serf runs its own too
        colony_cmd(n1.home, "events", "send", "deploy", "v2")
        colony_cmd(n1.home, "events", "send", "other", "ignored")
        colony_cmd(n1.home, "events", "send", "slow", "")
        wait_for(lambda: kinds().count("user") == 2, 30, "the user:deploy and user:local runs")
        users = {r[0]["COLONY_USER_EVENT"]: r for r in _records(tmp_path)
                 if r[0]["COLONY_EVENT"] == "user"}
        assert users["local"][1] == b"mine"
        assert users["local"][0]["COLONY_USER_SENDER"] == n0.peer_id
        env, stdin = users["deploy"]
        assert stdin == b"v2"
        assert env["COLONY_USER_EVENT"] == env["SERF_USER_EVENT"] == "deploy"
        assert env["COLONY_USER_SENDER"] == n1.peer_id
        assert env["COLONY_SELF_ID"] == n0.peer_id
        assert env["COLONY_API"] == f"127.0.0.1:{n0.api_port}"

        n2.kill(signal.SIGTERM)  # a graceful leave
        wait_for(lambda: "member-leave" in kinds(), 30, "the member-leave handler run")
        (env, stdin), = [r for r in _records(tmp_path)
                         if r[0]["COLONY_EVENT"] == "member-leave"]
        assert stdin.split(b"\t")[0].decode() == n2.peer_id

        def timed_out() -> int:
            return int(n0.api().call("GET", "/v1/stats")["drops"]["handlers.timed_out"])

        wait_for(lambda: timed_out() == 1, 30, "the slow handler to be killed and counted")
        assert n0.up()  # the node went on
        assert sorted(k for k in kinds() if k != "topic") == [
            "member-join", "member-join", "member-leave", "user", "user"]

        # topic:news: node 0 follows the topic while it runs. Publish until the first
        # message arrives (node 0's subscription joins the swarm by DHT rendezvous).
        sent: list[bytes] = []

        def topic_ran() -> bool:
            data = f"t{len(sent)}"
            n1.api().call("POST", "/v1/topics/publish", {"topic": "news", "data": data})
            sent.append(data.encode())
            return "topic" in kinds()

        wait_for(topic_ran, 30, "a topic:news handler run", every=1.0)
        got = [(env, stdin) for env, stdin in _records(tmp_path)
               if env["COLONY_EVENT"] == "topic"]
        env, stdin = got[0]
        assert env["COLONY_TOPIC"] == "news" and env["SERF_EVENT"] == "topic"
        assert env["COLONY_TOPIC_PUBLISHER"] == n1.peer_id and stdin in sent
        assert len({s for _, s in got}) == len(got)  # each message ran once
    finally:
        c.close()
