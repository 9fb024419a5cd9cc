"""The issue's colony run: 10 daemons, 200 capsules submitted from random nodes, every
one finishes with exactly one accepted receipt.

"Exactly one" is checked two ways: the custody cores' own counters of accepted
receipts summed over the colony equal the number of capsules, and no capsule shows
up in more than one `ReceiptAccepted` event on any node's event stream.

A scale run (`make test-long`, out of the default suite for time): the suite's shorter
cousins are test_capsule_colony.py (capsules from random nodes of a real colony) and
the partition and kill -9 fault runs, which check one receipt per capsule too.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from capsule_helpers import EventLog, get, submit
from colony_cluster import Cluster, colony_cmd, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.long]

NODES = 10
CAPSULES = 200


def test_200_capsules_on_10_daemons_each_accepted_once(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", NODES) as c:
        c.wait_converged(90)
        events = EventLog(c.nodes, ("ReceiptAccepted", "CapsuleFinished"))
        rng = random.Random(200)
        origins = [rng.randrange(NODES) for _ in range(CAPSULES)]

        def one(i: int) -> str:
            spec = {"name": f"c{i}", "command": ["sh", "-c", f"echo {i} > n.txt"],
                    "outputs": ["n.txt"], "maxexectime_s": 120}  # fmt: skip
            return submit(c.nodes[origins[i]], spec, 120)

        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(one, range(CAPSULES)))
        assert len(set(ids)) == CAPSULES

        def all_finished() -> bool:
            done = events.count("CapsuleFinished")
            return all(done[i] >= 1 for i in ids)

        wait_for(all_finished, 120, f"{CAPSULES} capsules to finish", every=0.5)
        elapsed = time.monotonic() - t0
        stats = [n.api().call("GET", "/v1/capsules/stats") for n in c.nodes]
        accepted_by_custody = sum(s["custody"].get("receipts_accepted", 0) for s in stats)
        assert accepted_by_custody == CAPSULES, [s["custody"] for s in stats]
        per_capsule = events.count("ReceiptAccepted")
        assert max(per_capsule.values()) == 1
        # Every capsule succeeded, read from a node other than its origin; a sample of
        # outputs is read back by CID.
        for i in rng.sample(range(CAPSULES), 40):
            row = get(c.nodes[(origins[i] + 1) % NODES], ids[i])
            assert row["state"] == "succeeded" and row["exit_status"] == 0, row
        for i in rng.sample(range(CAPSULES), 3):
            out = get(c.nodes[origins[i]], ids[i])["outputs"][0]
            reader = c.nodes[(origins[i] + 3) % NODES]
            colony_cmd(reader.home, "fetch", out)
            assert colony_cmd(reader.home, "cat", out).stdout == f"{i}\n"
        # Work spread over the colony (rendezvous tie-break), not piled on one node.
        executors = sum(1 for s in stats if s["attempts"].get("attempts_reported", 0) > 0)
        assert executors >= NODES // 2, [s["attempts"] for s in stats]
        print(f"{CAPSULES} capsules on {NODES} daemons: all finished in {elapsed:.1f} s")
