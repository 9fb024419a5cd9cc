"""Custody survives `kill -9` of every custodian at once (DESIGN §9).

Three daemons — so all three are the capsule's custodians — and a capsule running on
one of them. All three are SIGKILLed together and restarted from their homes: the
custody records come back from `<home>/custody` (store/custody_store.py),
the lost lease is re-offered with a higher fencing token, and the capsule finishes
with exactly one accepted receipt.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from capsule_helpers import EventLog, submit, wait_done, wait_state
from colony_cluster import Cluster, wait_for

pytestmark = pytest.mark.slow


def test_all_custodians_killed_and_restarted_finish_the_capsule(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", 3) as c:
        c.wait_converged(60)
        seed = c.nodes[0]
        spec = {"name": "survivor", "command": ["sh", "-c", "sleep 2; echo ok > ok.txt"],
                "outputs": ["ok.txt"], "maxretries": 5, "maxexectime_s": 60}  # fmt: skip
        cid = submit(c.nodes[1], spec)
        before = wait_state(seed, cid, ("running",), 30)

        def persisted_everywhere() -> bool:
            for n in c.nodes:
                stats = n.api().call("GET", "/v1/capsules/stats")
                if stats["records"] != 1 or stats["custody_store_writes"] < 1:
                    return False
            return True

        wait_for(persisted_everywhere, 10, "the record on all three custodians")
        for n in c.nodes:
            n.kill(signal.SIGKILL)

        # Watch each node as soon as it is back: a restarted node that is alone for a
        # moment leads alone (its view is all it knows) and may settle the capsule.
        events = EventLog([], ("ReceiptAccepted",))
        seed.start(env=c.env)
        wait_for(seed.up, 60, "seed back up")
        events.watch(seed)
        for n in c.nodes[1:]:
            n.start([seed.addr], env=c.env)
        for n in c.nodes[1:]:
            wait_for(n.up, 60, f"{n.home.name} back up")
            events.watch(n)
        # Every restarted node holds the record again (read back from <home>/custody).
        assert all(n.api().call("GET", "/v1/capsules/stats")["records"] == 1 for n in c.nodes)
        final = wait_done(c.nodes[1], cid, 60)
        assert final["state"] == "succeeded", final
        assert final["token"] > before["token"]
        wait_for(lambda: events.count("ReceiptAccepted")[cid] >= 1, 10,
                 f"ReceiptAccepted (final {final}, events {events.events})")  # fmt: skip
        assert events.count("ReceiptAccepted")[cid] == 1
