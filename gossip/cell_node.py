"""One node of a cell: the SWIM core and the cell core composed (sans-IO).

`CellNode.handle(inp, now)` routes inputs: the cells check timer goes to `CellCore`
after it was told the cell's live count from SWIM (`CellSize`); `SiblingSize` (a
digest of another cell, from tier 2) goes to the cell core; everything else to SWIM.
When the cell core decides a split or merge (`CellChanged`), SWIM is told to keep only
the new cell's members (`KeepCell`): after a split, push-pull and probes stay inside
the half; after a merge SWIM accepts the sibling's members again and learns them by
joining through `merge_seeds` (the caller passes members of the sibling cell, found in
its digest or the DHT). Both events are passed up.

Invariant: SWIM's cell restriction is always this node's current cell (from the
first `StartCells` on).
"""

from __future__ import annotations

from typing import Any, ClassVar

from gossip.cells import CHECK_TIMER, CellChanged, CellCore, CellSize, SiblingSize, StartCells
from gossip.events import Join, KeepCell
from gossip.swim import Swim
from overlay.core.effects import Effect, Emit, TimerFired
from overlay.core.ids import PeerId


class CellNode:
    """SWIM inside a cell; see the module docstring."""

    __slots__ = ("cells", "merge_seeds", "swim")

    #: The timers `quick_tick` answers for: SWIM's gossip tick (`overlay.node.Node` reads
    #: this from its parts; `sim.world.World` reads `quick_timers` from a bare core).
    QUICK_TIMERS: ClassVar[tuple[str, ...]] = Swim.QUICK_TIMERS
    quick_timers: ClassVar[frozenset[str]] = frozenset(QUICK_TIMERS)

    def __init__(self, swim: Swim, cells: CellCore) -> None:
        self.swim = swim
        self.cells = cells
        #: Members of the sibling cell to join through after a merge (set by the driver).
        self.merge_seeds: tuple[PeerId, ...] = ()

    def handle(self, inp: Any, now: float) -> list[Effect]:
        t = type(inp)
        if t is TimerFired and inp.timer == CHECK_TIMER:
            self.cells.handle(CellSize(self.swim.table.n_live), now)
            return self._after_cells(self.cells.handle(inp, now), now)
        if t is StartCells:
            out = self.cells.handle(inp, now)
            out += self.swim.handle(KeepCell(inp.cell), now)
            return out
        if t is SiblingSize:
            return self.cells.handle(inp, now)
        return self.swim.handle(inp, now)

    def quick_tick(self, timer: Any, now: float) -> float | None:
        """`Swim.quick_tick`: SWIM's timers reach SWIM unchanged through `handle`, so an
        idle gossip tick of SWIM is an idle tick of this node (a driver may skip it)."""
        return self.swim.quick_tick(timer, now) if timer in self.quick_timers else None

    def _after_cells(self, effects: list[Effect], now: float) -> list[Effect]:
        out: list[Effect] = []
        for eff in effects:
            out.append(eff)
            if type(eff) is Emit and type(eff.event) is CellChanged:
                ev: CellChanged = eff.event
                out += self.swim.handle(KeepCell(ev.new), now)
                if ev.reason == "merge" and self.merge_seeds:
                    out += self.swim.handle(Join(self.merge_seeds), now)
        return out
