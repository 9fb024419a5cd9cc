"""Cells in the simulator (seed 1, real SWIM + cell cores): a growing colony splits at
the cap into cells by key prefix, and every node's SWIM view is exactly its cell
(docs/gossip.md "Cells", docs/simulation.md). About 8 s."""

from __future__ import annotations

from gossip.cells import CellId
from sim.cells_run import CellsRun, run_cells


def test_cells_split_at_the_cap_and_views_stay_inside_their_cell() -> None:
    rep = run_cells(CellsRun(nodes=200, cap=50, seed=1, settle_s=150.0))
    cells = [CellId.parse(name) for name in rep.cells]
    assert sum(rep.cells.values()) == 200
    assert len(cells) >= 4 and max(rep.cells.values()) <= 50
    # The final cells are leaves of one trie: prefix-free.
    assert not any(a != b and a.is_ancestor_of(b) for a in cells for b in cells)
    assert rep.splits > 0 and rep.merges == 0
    assert rep.accuracy_min == 1.0 and rep.foreign_max == 0
    assert rep.max_members < 50  # bounded by the cap, not by N
    assert rep.outside_cell_refused > 0  # the other half's claims kept arriving
