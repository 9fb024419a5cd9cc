"""A peer flooding a daemon with ~10^4 frames/s (malformed gossip and DHT frames,
Bitswap wants for blocks nobody has) while another daemon fetches a DAG from it: the
target lives, the fetch completes byte-identical, the target's memory stays bounded
and what it dropped is counted in /v1/stats. No timing asserted; bench/flood.py
compares the flooded fetch rate with an unflooded one in the same run.

The target is starved of CPU meanwhile (flood.starved: pinned to one core beside three
busy loops, at a lower priority), so that it cannot keep up with the flood: its
driver inbox overflows in every run, as it did once by chance when another process
held the machine's other core (docs/reliability.md). Then what the inbox drops must be
the flooder's inputs, none of the good peer's, and the good peer stays in the
target's view. Before the fair inbox (runtime/inbox.py) this failed 10 runs of 10
(the good peer missing from the view in 6; a per-peer drop count did not exist).

Probe outcomes are printed, not asserted: whether an ack is handled within SWIM's
probe timeout on a loop given ~1/10 of a core is a matter of timing. Before the fair
inbox 8 of 10 runs had 2 or 3 failed probes, after it 0 of 10 here; but on CI, with
the suite's other worker on the same core, 3 acks came late (`ack_unexpected` 3)
while none of the good peer's inputs was dropped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import Cluster, colony_cmd, deterministic_bytes
from flood import FloodReport, flood, starved

from overlay.core.ids import PeerId

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
RSS_GROWTH_BOUND_KIB = 150 * 1024


def _bad_frames(stats: dict[str, object]) -> int:
    drops = stats["drops"]
    assert isinstance(drops, dict)
    return sum(int(v) for k, v in drops.items() if k.startswith("transport."))


def test_a_flooding_peer_costs_only_itself(tmp_path: Path) -> None:
    # Two datasets: the flood runs again, with the second fetch, in the rare run where the
    # starved target kept up with the first (the condition under test did not happen:
    # on a loaded machine the flooder's own queue can fill first; seen twice in ~20 runs).
    datas = [tmp_path / f"d{i}.bin" for i in range(2)]
    for i, d in enumerate(datas):
        d.write_bytes(deterministic_bytes(16 * 1024 * 1024, seed=9 + i))
    with Cluster(tmp_path / "c", 2) as c:
        target, good = c.nodes
        c.wait_converged(60)
        cids = [json.loads(colony_cmd(target.home, "publish", str(d), "--json",
                                      timeout=120).stdout)["cid"] for d in datas]
        rss0 = target.rss_kib()
        before = target.api().call("GET", "/v1/stats")

        async def main(cid: str, out: Path, report: FloodReport) -> None:
            async with trio.open_nursery() as n:
                n.start_soon(flood, PeerId.from_base58(target.peer_id), target.addr,
                             10_000, 8.0, report)
                await trio.sleep(1.0)
                await trio.to_thread.run_sync(lambda: colony_cmd(
                    good.home, "fetch", cid, "-o", str(out), timeout=120))

        for data, cid in zip(datas, cids, strict=True):
            report = FloodReport()
            out = data.with_suffix(".got")
            # Three busy loops (the target gets ~1/10 of its core): with two, the target
            # kept up once while the suite's other xdist worker held the other core.
            with starved(target.pid, 30.0, hogs=3):
                trio.run(main, cid, out, report)
            assert target.proc is not None and target.proc.poll() is None, "the target died"
            assert out.read_bytes() == data.read_bytes()
            after = target.api().call("GET", "/v1/stats")
            drops = after["drops"]
            print(f"flood: offered {report.offered}, posted {report.posted}, reconnects "
                  f"{report.reconnects}; target drops {({k: v for k, v in drops.items() if v})}; "
                  f"gossip {after['gossip']}")
            assert report.offered > 20_000  # the flood ran at its rate
            if drops["driver.inbox_over_share"] > 0:
                break
        # The condition under test happened: the starved target could not keep up.
        assert drops["driver.inbox_over_share"] > 0, "the target kept up twice: not starved"
        # What the inbox dropped was the flooder's, counted against it; none of the
        # good peer's, and none of its acks came too late.
        assert f"driver.inbox_dropped.{good.peer_id}" not in drops
        assert sum(v for k, v in drops.items() if k.startswith("driver.inbox_dropped.")) \
            == drops["driver.inbox_full"]
        probes_failed = [s["gossip"].get("probe_failed", 0) for s in (before, after)]
        print(f"probes of the good peer failed during the flood: "
              f"{probes_failed[1] - probes_failed[0]} (timing, reported only)")
        # The garbage was counted: each bad frame resets its stream, counted by reason.
        assert sum(v for k, v in after["drops"].items()
                   if k.startswith("transport.stream_dropped.")) > 0
        assert _bad_frames(after) > _bad_frames(before)
        growth = target.rss_kib() - rss0
        assert growth < RSS_GROWTH_BOUND_KIB, f"RSS grew by {growth} KiB"
        assert {m["id"] for m in target.members() if m["state"] == "alive"} == {
            target.peer_id, good.peer_id}
