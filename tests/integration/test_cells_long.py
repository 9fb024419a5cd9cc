"""The issue's 20-daemon test with two cells (`make test-long`; the suite runs the
5-daemon colony-mode version in test_cells.py).

Twenty `colony daemon` processes on 127.0.0.1 in colony mode (the founder's node has
every role, the others member+execute), `[cell] cap = 15`: the root cell splits once
into two cells of ~10 (a third cell only if a half holds more than 15, ~1 % of key
draws). Then:

- every node's live member list is exactly its cell, and `colony cells` on every node
  lists every cell with its member count;
- `colony stats` shows the colony-wide totals: the digests' sum counts all 20 members,
  and push-sum's estimate is within 1 % of 20 on every node;
- a topic message published in one cell reaches every subscriber in every cell,
  exactly once (neighbours of other cells swap chains first);
- a capsule submitted in the founder's cell whose label only a node of the other cell
  has runs on that node, and the founder's `colony capsule get` shows its receipt.
Figures (printed with -s): time to converge, topic delivery, time to place across cells.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import Cluster, cli, colony_cmd, wait_for
from cross_cell import (
    capsule_runs_in_other_cell,
    cell_of,
    cells_state,
    colony_members,
    listed,
    topic_reaches_all,
    views_are_cells_capped,
)

pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

N = 20
CAP = 15
ENV = {"COLONY_CELL_CAP": str(CAP), "COLONY_CELL_HOLD_S": "2",
       "COLONY_CELL_CHECK_INTERVAL_S": "0.5", "COLONY_CELL_DIGEST_INTERVAL_S": "2",
       "COLONY_CELL_MERGE_BELOW": "0.5",
       "COLONY_AGGREGATE_EPOCH_S": "4", "COLONY_AGGREGATE_ROUND_S": "0.2"}


def test_twenty_daemons_two_cells_topics_capsules_and_totals(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "c", N, env=ENV, start_timeout=300)
    try:
        c.prepare()
        founder, *others = c.nodes
        cli(founder.home, "colony", "create", "lab")
        for node in others:
            tok = node.home.parent / f"{node.home.name}.token"
            cli(founder.home, "cert", "issue", node.peer_id, "--roles", "member,execute",
                "--expires", "1d", "--bootstrap", founder.addr, "--out", str(tok))
            cli(node.home, "join", str(tok))
        t0 = time.monotonic()
        c.launch()
        try:
            cells = wait_for(lambda: views_are_cells_capped(c, CAP), 240,
                             "every member list to be exactly its cell", every=1.0)
        except AssertionError as e:
            raise AssertionError(f"{e}; cells and views: {cells_state(c)}") from None
        want = {cell: len(m) for cell, m in cells.items()}
        print(f"cells {want} after {time.monotonic() - t0:.1f} s")
        wait_for(lambda: all(listed(n) == want for n in c.nodes), 90,
                 f"`colony cells` on every node to list {want}", every=1.0)
        stats = founder.api(10).call("GET", "/v1/stats")["cells"]
        assert stats["count"] == len(want) and stats["members"] == N, stats
        out = colony_cmd(founder.home, "stats").stdout
        assert f"cells: {len(want)} known" in out, out
        wait_for(lambda: all(abs(colony_members(n) - N) <= 0.01 * N for n in c.nodes), 120,
                 f"push-sum totals of {N} members on every node (1 %)", every=1.0)
        print("push-sum members per node:", sorted(round(colony_members(n), 3)
                                                   for n in c.nodes))

        took = topic_reaches_all(founder, c.nodes, "across", timeout_s=60)
        print(f"topic message on all {N} subscribers in {len(want)} cells: {took:.2f} s")

        home = cell_of(founder)
        target = next(n for n in others if cell_of(n) != home)
        figures = capsule_runs_in_other_cell(founder, target, timeout_s=120)
        print(f"capsule placed across cells: {figures}")
    finally:
        c.close()
