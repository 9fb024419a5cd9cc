"""Cells with the daemon's DHT rendezvous instead of the directory oracle (issue #17).

`CellsRun(rendezvous="dht")` (sim/cells_rdv.py): every node runs a real Kademlia core
next to its SWIM + cell cores, its cell's publisher provides the site's rendezvous key,
every node reads the providers' reports into its own `CellDirectory` and joins, feeds
`SiblingSize` and moves (`cell_to_adopt`) from it; the oracle only measures.
docs/simulation.md "Cells" has the figures. About 20 + 15 CPU s.
"""

from __future__ import annotations

from dataclasses import replace

from gossip.cells import CellId
from sim.cells_rdv import RdvCellsSim, cells_sim
from sim.cells_run import CellsRun
from sim.combined_run import CombinedRun, CombinedSim


def test_cells_converge_with_each_nodes_own_dht_rendezvous() -> None:
    sim = cells_sim(CellsRun(nodes=100, cap=30, seed=1, settle_s=200.0, rendezvous="dht"))
    assert isinstance(sim, RdvCellsSim)
    rep = sim.run()
    s = sim.rdv_stats
    cells = [CellId.parse(name) for name in rep.cells]
    # Every node placed itself from its own reading, and the cells are a prefix-free
    # cover holding everybody, each under the cap.
    assert s.unplaced == 0 and sum(rep.cells.values()) == 100
    assert len(cells) >= 3 and max(rep.cells.values()) <= 30
    assert not any(a != b and a.is_ancestor_of(b) for a in cells for b in cells)
    # Every SWIM view is exactly its cell, and every node's directory knows every cell.
    assert rep.accuracy_min == 1.0 and rep.foreign_max == 0
    assert s.unseen_nodes == 0
    # The rendezvous ran through the DHT: one publisher per cell at least, readers
    # found the providers and heard their reports.
    assert s.provides >= len(cells) and s.providers_max >= len(cells)
    assert s.requests > 0 and s.reports_bad == 0 and s.dht_messages > 0


def test_joiners_find_their_cell_after_its_publisher_crashed() -> None:
    """The combined run's 20 % crash and churn, 40 nodes, cap 20, seed 1. Before
    `should_publish`, both cells' publishers crashed (their records linger 48 h, so a
    joiner's lookup found providers and heard none), and a churn joiner that ranked
    first in the cell members' views (bootstrapped into their SWIM, not placed: it
    publishes only once placed) kept them from publishing: the 8 joiners stayed
    unplaced for good and every member listed some of them (24 inexact views)."""
    sim = CombinedSim(replace(CombinedRun(), nodes=40, cap=20, seed=1, rendezvous="dht"))
    rep = sim.run()
    assert isinstance(sim.cells, RdvCellsSim)
    s = sim.cells.finish_rdv()
    assert s.requests_failed > 0  # the crashed publishers' records were read
    assert s.unplaced == 0 and s.unseen_nodes == 0
    v = rep.cell_views["repaired"]
    assert v.live == 40 - 8 + 15 - 15
    assert v.accuracy_min == 1.0 and v.inexact == 0 and v.foreign_max == 0
