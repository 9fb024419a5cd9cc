"""Labels changed on a running daemon (`colony labels --set/--delete`, POST /v1/labels):
the other member sees them in gossip, a capsule requiring the new label is placed on
that node and runs there, a bad label is refused with the rule, and a restart keeps
the change (labels.json). Two real daemons on 127.0.0.1."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from colony_cluster import Cluster, colony_cmd, wait_for

from overlay.client import Colony
from overlay.client.errors import BadRequest


def _labels_of(viewer: Colony, peer: str) -> dict[str, str]:
    for m in viewer.members():
        if m.id == peer:
            return dict(m.labels)
    return {}


def test_labels_change_while_running_place_capsules_and_survive_restart(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", 2) as c:
        a, b = c.nodes
        c.wait_converged(timeout=60)
        ca, cb = Colony.for_home(a.home), Colony.for_home(b.home)
        assert cb.labels() == {}

        out = colony_cmd(b.home, "labels", "--set", "site=lab", "--set", "gpu=none", "--json")
        assert json.loads(out.stdout) == {"gpu": "none", "site": "lab"}
        wait_for(lambda: _labels_of(ca, b.peer_id) == {"gpu": "none", "site": "lab"}, 30,
                 "A to see B's new labels in gossip")

        # Placement follows the gossiped ad and the executor accepts the offer: B's own
        # config must have moved with its ad.
        spec = {"name": "where", "command": ["sh", "-c", "echo here"],
                "maxwaittime_s": 60, "conditions": {"labels": {"site": "lab"}}}
        sub = ca.submit(spec)
        done = ca.wait(sub.id, timeout_s=90)
        assert done.state == "succeeded", done.raw
        assert done.executor == b.peer_id

        bad = colony_cmd(b.home, "labels", "--set", "=x", check=False)
        assert bad.returncode == 1 and "--set wants KEY=VALUE" in bad.stderr
        bad = colony_cmd(b.home, "labels", "--set", " site=x", check=False)  # the daemon's rule
        assert bad.returncode == 1 and "surrounding spaces" in bad.stderr, bad.stderr
        too_long = {"k": "v" * 300}
        with pytest.raises(BadRequest, match="at most 256 characters"):
            cb.set_labels(too_long)
        assert cb.labels() == {"gpu": "none", "site": "lab"}  # a refused change loses nothing

        assert cb.set_labels(delete=["gpu"]) == {"site": "lab"}
        wait_for(lambda: _labels_of(ca, b.peer_id) == {"site": "lab"}, 30,
                 "A to see the deleted label gone")

        b.kill(signal.SIGTERM)
        assert b.proc is not None
        b.proc.wait(timeout=30)
        b.start()
        wait_for(b.up, 60, "B's API after the restart")
        assert Colony.for_home(b.home).labels() == {"site": "lab"}
        wait_for(lambda: _labels_of(ca, b.peer_id) == {"site": "lab"}, 60,
                 "A to see B's saved labels after its restart")
