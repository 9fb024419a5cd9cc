"""Placement across cells: which cell a capsule goes to (DESIGN §6, docs/gossip.md).

Custody and ranking stay inside one cell (placement.py ranks the members a custodian
knows, i.e. its own cell). Before a capsule enters custody, the submitting node picks
the cell it goes to, from the other cells' digests (gossip/cell_digest.py), which say
per resource class how many members offer it and how much of it is free:

1. `plan`: keep the current cells whose classes can meet the conditions (`needs`:
   `exec:<kind>`, `gpu` with free ≥ gpu, `label:<k>=<v>`, `loc:<where>`, `cpu`,
   `mem`); none → `Local` (custody then says why nothing fits, as in one cell); one →
   that cell; more → `Probe` two of them: this node's own cell (when it meets them)
   and one other at random, else two at random (power of two choices, as
   Mitzenmacher's balls-into-bins: max load ln ln n / ln 2 instead of ln n / ln ln n;
   the origin is itself random, so own-plus-one is still two random choices).
2. the runtime asks a seed of each probed cell for its report *now* (late binding: the
   digests read are up to three digest intervals old), and calls `probed`, which keeps
   the cell with more free capacity of the capsule's main class less its backlog
   (`score`); a tie or an unanswered probe keeps this node's own cell, else the one
   that answered.
3. `Forward(cell, seeds)`: the runtime hands the signed capsule to a seed of that cell
   (in the order given, randomised), which submits it there; its custodians then rank
   with full knowledge of that cell. `Local`: submit in this node's own cell.

Sans-IO: `now` and the `rng` are given; the placer keeps only counters and a bounded
map of probes in flight (`MAX_PENDING`, oldest dropped and counted; expired after
`probe_timeout_s`). A digest is a sum over members, so a cell "meets" a condition when
its class is present (and, for GPUs, when the cell's total is enough): a condition
that no single member meets (gpu 2 in a cell of two 1-GPU nodes) still sends the
capsule there, where custody waits with its reason. A digest keeps its 32 largest
classes: a label or location missing from a full digest counts as possibly present.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gossip.cell_digest import MAX_CLASS_CHARS, MAX_CLASSES, CellDigest
from gossip.cell_directory import CellReport, Seed
from gossip.cells import CellId
from overlay.capsule.spec import Conditions

#: Probes in flight at once; the oldest is dropped (and counted) beyond it.
MAX_PENDING = 1024


@dataclass(frozen=True, slots=True)
class Local:
    """Submit in this node's own cell; `reason` says why (for the log)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Probe:
    """Ask a seed of each of these two cells for its report now, then call `probed`."""

    cells: tuple[CellReport, CellReport]


@dataclass(frozen=True, slots=True)
class Forward:
    """Hand the capsule to a member of `cell`: try `seeds` in this order."""

    cell: CellId
    seeds: tuple[Seed, ...]
    reason: str


Plan = Local | Probe | Forward


@dataclass(frozen=True, slots=True)
class CellPlacementConfig:
    probe_timeout_s: float = 5.0


def needs(cond: Conditions) -> tuple[tuple[str, float], ...]:
    """The classes a cell must have for `cond`, with the least free amount of each."""
    out: list[tuple[str, float]] = []
    if cond.executor:
        out.append((f"exec:{cond.executor}", 0.0))
    if cond.gpu:
        out.append(("gpu", float(cond.gpu)))
    if cond.cpu:
        out.append(("cpu", 0.0))
    if cond.mem_mib:
        out.append(("mem", 0.0))
    for k, v in cond.labels:
        out.append((f"label:{k}={v}", 0.0))
    if cond.location:
        out.append((f"loc:{cond.location}", 0.0))
    return tuple((name[:MAX_CLASS_CHARS], least) for name, least in out)


def _optional(name: str) -> bool:
    """Classes a full digest may have left out (rare ones are dropped first)."""
    return name.startswith(("label:", "loc:"))


def meets(digest: CellDigest, cond: Conditions) -> bool:
    """Can `digest`'s cell meet `cond`, as far as a digest tells?"""
    full = len(digest.classes) >= MAX_CLASSES
    for name, least in needs(cond):
        cap = digest.capacity(name)
        if cap is None:
            if full and _optional(name):
                continue
            return False
        if cap.members < 1 or cap.free < least:
            return False
    return True


def score(digest: CellDigest, cond: Conditions) -> float:
    """Free capacity of the capsule's main class (its executor's free CPUs, else free
    GPUs when it asks for any, else free CPUs) less the capsules already waiting in
    the cell: between two saturated cells (0 free each) the shorter queue wins.
    Higher is better."""
    name = f"exec:{cond.executor}" if cond.executor else ("gpu" if cond.gpu else "cpu")
    cap = digest.capacity(name[:MAX_CLASS_CHARS])
    net = (cap.free if cap is not None else 0.0) - digest.backlog
    if net > 0:
        return net  # room after its queue: the more, the better
    # Saturated: the queue per member drains at about one capsule per member.
    return net / max(1, cap.members if cap is not None else 1)


@dataclass(slots=True)
class _Pending:
    cells: tuple[CellReport, CellReport]
    cond: Conditions
    deadline: float


@dataclass(slots=True)
class CellPlacer:
    """Decides a capsule's cell; see the module docstring. One per node."""

    rng: random.Random
    config: CellPlacementConfig = field(default_factory=CellPlacementConfig)
    pending: dict[str, _Pending] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def plan(self, capsule_id: str, cond: Conditions, own: CellId,
             cells: Sequence[CellReport], now: float) -> Plan:
        """The first step for a capsule submitted here; `cells` are the current cells
        (leaves, this node's own among them with its fresh report)."""
        self.expire(now)
        if not any(r.cell != own for r in cells):
            return Local("one cell")
        fit = [r for r in sorted(cells, key=lambda r: r.cell.name()) if meets(r.digest, cond)]
        if not fit:
            self._count("no_cell_meets")
            return Local(f"no cell of {len(cells)} meets {cond.describe()}")
        if len(fit) == 1:
            only = fit[0]
            if only.cell == own:
                return Local("only this cell meets the conditions")
            self._count("forwards")
            return Forward(only.cell, self._order(only.seeds), "only cell that meets")
        # Own cell and one other when the own cell can run it: the origin is itself a
        # random cell (members submit alike), so this is still two random choices for
        # the balls-into-bins bound, the own one costs no probe (its report is fresh),
        # and a tie keeps the capsule home. Sampling two others instead forwarded
        # capsules from cells with free slots, and on a tie of two saturated others
        # always to the first by name (sim/placement_quality.py: 99 s mean wait at load
        # 0.7 against 1.5 s for no placement at all).
        mine = [r for r in fit if r.cell == own]
        if mine:
            a, b = mine[0], self.rng.choice([r for r in fit if r.cell != own])
        else:
            a, b = self.rng.sample(fit, 2)
        if capsule_id not in self.pending and len(self.pending) >= MAX_PENDING:
            del self.pending[next(iter(self.pending))]
            self._count("probes_dropped")
        self.pending[capsule_id] = _Pending((a, b), cond, now + self.config.probe_timeout_s)
        self._count("probes")
        return Probe((a, b))

    def probed(self, capsule_id: str, own: CellId,
               answers: Mapping[CellId, CellDigest | None], now: float) -> Plan:
        """The probe's answers (None: that cell's seeds did not answer): the better of
        the two, by `score` of the fresh digests. Late or unknown: `Local`."""
        p = self.pending.pop(capsule_id, None)
        if p is None or now > p.deadline:
            self._count("probes_late")
            return Local("probe answered too late")
        scored: list[tuple[float, bool, float, CellReport]] = []
        for rep in p.cells:
            fresh = answers.get(rep.cell)
            if fresh is None:
                self._count("probes_unanswered")
                continue
            if not meets(fresh, p.cond):  # it changed since its digest was read
                self._count("probes_no_longer_meet")
                continue
            # Higher score first; on a tie this node's own cell (no forwarding), else
            # either at random (by name, one cell took every tied capsule).
            scored.append((-score(fresh, p.cond), rep.cell != own, self.rng.random(), rep))
        if not scored:
            return Local("neither probed cell answered or still meets the conditions")
        scored.sort(key=lambda t: t[:3])
        best = scored[0][3]
        if best.cell == own:
            return Local("this cell has the most free capacity of the two probed")
        self._count("forwards")
        return Forward(best.cell, self._order(best.seeds), "more free capacity of two probed")

    def expire(self, now: float) -> None:
        for cid in [c for c, p in self.pending.items() if now > p.deadline]:
            del self.pending[cid]
            self._count("probes_expired")

    def _order(self, seeds: tuple[Seed, ...]) -> tuple[Seed, ...]:
        out = list(seeds)
        self.rng.shuffle(out)  # spread forwarded capsules over the cell's seeds
        return tuple(out)
