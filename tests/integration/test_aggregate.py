"""Colony-wide totals by push-sum on real daemons (services/aggregate.py).

Five `colony daemon` processes on 127.0.0.1 with short epochs (4 s, rounds of 0.2 s).
After membership converges, every node's `/v1/stats` "colony" totals of a completed
epoch must match the truth within 1 %: 5 members, and the sums of the CPU cores and
in the members' resource ads as gossip shows them. `colony stats` prints the
same totals. Then one daemon is killed (SIGKILL): once the others see it dead, a
later epoch's totals count 4 members (the next epoch repairs what the kill cost).

`make test-long` (out of the default suite for time): test_cells.py checks the same
totals on every node of a colony split into cells, within 1 %.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import Cluster, Node, colony_cmd, wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow, pytest.mark.long]

N = 5
ENV = {"COLONY_AGGREGATE_EPOCH_S": "4", "COLONY_AGGREGATE_ROUND_S": "0.2"}


def totals(node: Node) -> dict[str, Any] | None:
    last = node.api(10).call("GET", "/v1/stats")["colony"].get("last")
    return last if isinstance(last, dict) else None


def truth(node: Node) -> dict[str, float]:
    """The sums over the live members' ads in `node`'s gossip view."""
    members = node.members()
    ads = [m.get("ad") or {} for m in members]
    return {"members": float(len(members)),
            "cpu_cores": float(sum(a.get("cpu_cores", 0) for a in ads))}  # fmt: skip


def close(got: dict[str, Any], want: dict[str, float]) -> bool:
    return all(abs(float(got.get(k, 0.0)) - v) <= 0.01 * v for k, v in want.items())


def test_push_sum_totals_match_the_colony_and_follow_a_kill(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", N, env=ENV) as c:
        c.wait_converged(60)
        want = truth(c.nodes[0])
        assert want["members"] == N and want["cpu_cores"] > 0, want

        def all_close() -> bool:
            for node in c.nodes:
                t = totals(node)
                if t is None or not close(t, want):
                    return False
            return True

        try:
            wait_for(all_close, 40, f"every node's totals within 1 % of {want}")
        except AssertionError:
            print({n.home.name: n.api(10).call("GET", "/v1/stats")["colony"] for n in c.nodes})
            raise
        t = totals(c.nodes[2])
        assert t is not None and round(t["members"]) == N, t

        out = colony_cmd(c.nodes[1].home, "stats").stdout
        assert "colony totals, epoch" in out and f"{N} members" in out, out
        js = json.loads(colony_cmd(c.nodes[1].home, "stats", "--json").stdout)
        assert js["colony"]["method"] == "push-sum", js["colony"]
        assert js["drops"]["aggregate.malformed"] == 0

        # A kill: after the others see it dead, a completed epoch counts N - 1.
        victim = c.nodes[-1]
        victim.kill(signal.SIGKILL)
        left = c.nodes[:-1]
        wait_for(lambda: all(n.state_of(victim.peer_id) not in ("alive", "suspect")
                             for n in left), 60, "the others to see the kill")

        def counts_four() -> bool:
            return all((t := totals(n)) is not None and abs(t["members"] - (N - 1)) <= 0.04
                       for n in left)

        try:
            wait_for(counts_four, 40, f"totals of {N - 1} members on every survivor")
        except AssertionError:
            print({n.home.name: n.api(10).call("GET", "/v1/stats")["colony"] for n in left})
            raise
