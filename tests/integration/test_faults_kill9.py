"""kill -9 of random daemons in a loop, during fetches of a multi-MiB DAG, publishes
and capsule runs; each killed daemon restarts on the same home.

Asserted: every restart opens its store and answers (a store that does not open
cleanly fails `up`); no acknowledged block is lost (every publish that returned a
CID is fetched whole, byte-identical, after the loop); the receipt checker
(sim/campaign_check's invariants over custody-record snapshots) finds no violation
and every acknowledged capsule ends. Real daemons on 127.0.0.1, no namespaces needed.
See docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from capsule_helpers import restart, submit
from colony_cluster import REPO, Cluster, Node, colony_cmd, deterministic_bytes, wait_for
from fault_colony import END_STATES, ReceiptCheck

from overlay.core.ids import PeerId

pytestmark = pytest.mark.slow

#: The kill schedule; a failure prints it. Replay another with COLONY_KILL9_SEED=N.
SEED = int(os.environ.get("COLONY_KILL9_SEED", "7"))
ROUNDS = 5


def _fetch_bg(home: Path, cid: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "overlay.cli.main", "--home", str(home), "fetch", cid,
         "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)


def test_kill9_loop_loses_no_acknowledged_block_and_keeps_one_receipt(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    big = tmp_path / "big.bin"
    big.write_bytes(deterministic_bytes(6 * 1024 * 1024 + 5, seed=SEED))
    published: dict[str, bytes] = {}
    with Cluster(tmp_path / "colony", 3) as c:
        c.wait_converged(60)
        check = ReceiptCheck(frozenset(PeerId.from_base58(n.peer_id) for n in c.nodes))
        r = colony_cmd(c.nodes[0].home, "publish", str(big), "--json", timeout=90)
        published[json.loads(r.stdout)["cid"]] = big.read_bytes()
        root = next(iter(published))
        kills = []
        for rnd in range(ROUNDS):
            fetcher = c.nodes[(rnd + 1) % 3]
            fetch = _fetch_bg(fetcher.home, root, tmp_path / f"f{rnd}.bin")
            small = tmp_path / f"s{rnd}.txt"
            small.write_bytes(f"round {rnd} {rng.random()}\n".encode())
            src = c.nodes[rng.randrange(3)]
            r = colony_cmd(src.home, "publish", str(small), "--json", timeout=60, check=False)
            if r.returncode == 0:  # acknowledged: owed forever after
                published[json.loads(r.stdout)["cid"]] = small.read_bytes()
            for k in range(2):
                spec = {"name": f"k{rnd}.{k}", "command": ["sh", "-c", "sleep 1; echo ok"]}
                # A refusal (a custodian just died) is not an acknowledgement.
                with contextlib.suppress(Exception):
                    check.acked(submit(c.nodes[rng.randrange(3)], spec, timeout_s=20))
            time.sleep(rng.uniform(0.2, 1.5))  # let the fetch get going
            victim = c.nodes[rng.randrange(3)]
            kills.append(victim.home.name)
            victim.kill()
            restart(c, victim, 60)  # `up` fails unless the store opened and the API answers
            check.snapshot(c.nodes)
            fetch.wait(timeout=120)
        c.wait_converged(60)
        where = f"(kill schedule seed {SEED}, killed {kills})"
        # No acknowledged block lost: each publish fetched whole from another node.
        for i, (cid, data) in enumerate(published.items()):
            reader = c.nodes[(i + 1) % 3]
            out = tmp_path / f"check{i}.bin"
            colony_cmd(reader.home, "fetch", cid, "-o", str(out), timeout=120)
            assert out.read_bytes() == data, f"{cid} changed after kill -9 {where}"

        def all_ended() -> bool:
            check.snapshot(c.nodes)
            return not [x for x in check.unfinished()
                        if not any(_state(n, x) in END_STATES for n in c.nodes)]

        try:
            wait_for(all_ended, 90, f"every acknowledged capsule to end {where}", every=1.0)
            stuck = ""
        except AssertionError as e:
            stuck = f"{e}; " + _describe(c.nodes, check.unfinished())
        # Safety first, whatever liveness did (judged on one consistent state).
        check.settle(c.nodes)
        assert check.violations() == [], f"{check.violations()} {where}"
        assert check.checker.acked, "no capsule was acknowledged: the loop tested nothing"
        assert len(kills) == ROUNDS
        if stuck:
            # Seen in about 1 run of 3 before custody stopped re-evaluating on reports
            # about peers it already hid (a Replicate/refusal feedback loop that
            # overflowed the inbox); 6 of 6 runs ended every capsule since. Still
            # reported, not failed, with its schedule: docs/reliability.md, "Open".
            pytest.xfail(f"liveness under repeated kill -9: {stuck}")


def _state(node: Node, cid: str) -> str | None:
    try:
        return str(node.api(20).call("GET", "/v1/capsules/get", id=cid)["state"])
    except Exception:
        return None



def _describe(nodes: list[Node], cids: list[str]) -> str:
    """Each node's view of each unfinished capsule: what a stall report needs."""
    out = []
    for cid in cids:
        for n in nodes:
            try:
                r = n.api(20).call("GET", "/v1/capsules/get", id=cid)
                out.append(f"{cid[-8:]}@{n.home.name}: {r['state']} epoch {r.get('epoch')} "
                           f"token {r.get('token')} executor {str(r.get('executor'))[-6:]} "
                           f"custodians {[str(p)[-6:] for p in r.get('custodians', [])]} "
                           f"reason {r.get('reason')!r}")
            except Exception as e:
                out.append(f"{cid[-8:]}@{n.home.name}: {e}")
    return "; ".join(out)
