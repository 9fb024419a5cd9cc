"""What a node knows of the other cells: reports read through the DHT rendezvous (sans-IO).

The daemon (overlay/runtime/services/cells.py) finds each site's cells by a DHT
rendezvous key that one member per cell provides (its *publisher*: the live member
whose sha256(peer id) is smallest, each member deciding from its own SWIM view), and
asks each provider for a `CellReport`: its cell's digest (gossip/cell_digest.py) and up
to `MAX_SEEDS` members with addresses, which a joiner dials to enter that cell. This
module holds the pure parts: the report's wire form and its validation, the directory
of reports heard, which cells are current, and when a node should move.

Rules, and why:

- A report speaks only for the responder's own cell: its key, and every seed's, must
  lie in the digest's cell (a member cannot vouch for a cell it is not in).
- Freshness is the local receive time (`ttl_s`), not the digest's `issued`: clocks
  differ, and a provider that stopped answering is forgotten after `ttl_s`.
- *Current* cells (`leaves`): fresh cells with no fresh strict descendant. A member
  that has not split yet still reports the parent for a few check intervals; the
  descendants win. After a merge the children's reports age out within `ttl_s` (the
  members that merged drop them at once: `forget_under`).
- Moving (`cell_to_adopt`, from the other nodes' reports): split and merge are the
  cell core's decisions (gossip/cells.py). The directory moves a node only when its
  own view cannot: down to `choose_cell`'s leaf on the first reading after start (a
  joiner started at the root, a restarted node whose saved cell was split while it was
  away), or once *settled* (no change of its own for the caller's grace time: a member
  that decided to split later than the others can see its count fall below the cap as
  the others leave it, and never split); and anywhere when it is alone in its cell (its
  cell merged or emptied while it was away). Moving down is safe by the cover
  invariant once reports from before a merge have aged out (the grace time).
  A settled node with live cell-mates moves *up* only when the others report a cell
  above its own holding its key and its cell count plus everything else reported
  under that cell is below the merge threshold: its sibling merged into the parent
  without it (the sibling's digest expired before this node's hold time ran out; seen
  in a 9-daemon run, the node then stayed in the child for good; the combined
  simulation stranded 3 nodes so after a 70 % crash). Reports of its own cell by
  stranded cell-mates do not hold it back. The same threshold keeps the
  parent's members from moving down into such a child, so the two rules never pull
  in opposite directions: a pair of siblings holding fewer than `merge_at` members
  (reported) belongs in the parent, a pair holding more in the children.

Bounds: at most `MAX_CELLS` cells are remembered (the oldest heard is dropped), a
report carries at most `MAX_SEEDS` seeds of at most `MAX_ADDRS` addresses each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossip.cell_digest import CellDigest
from gossip.cells import CellId, cell_key, choose_cell
from overlay.core.errors import MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.validate import strings

TAG = 42
MAX_CELLS = 1024
MAX_SEEDS = 4
MAX_ADDRS = 4
MAX_ADDR_CHARS = 256
#: Providers of the rendezvous key a reader asks for their report per round (the
#: daemon, overlay/runtime/services/cells.py, and the simulator, sim/cells_rdv.py).
MAX_READ = 64
#: A report is current for this many digest intervals after it was heard.
TTL_INTERVALS = 3.0


def rendezvous_key(colony: str, site: str) -> bytes:
    """The DHT key a site's cell publishers provide: a sha2-256 multihash of its name."""
    return b"\x12\x20" + hashlib.sha256(f"/colony/cells/{colony}/{site}".encode()).digest()


@dataclass(frozen=True, slots=True)
class Seed:
    """A member of the reported cell and addresses to dial it at."""

    peer: PeerId
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CellReport:
    """One member's account of its cell: the digest and a few members to join through."""

    digest: CellDigest
    seeds: tuple[Seed, ...] = ()

    @property
    def cell(self) -> CellId:
        return self.digest.cell

    def to_wire(self) -> list[Any]:
        return [TAG, self.digest.to_wire(),
                [[s.peer.raw, list(s.addrs)] for s in self.seeds]]  # fmt: skip

    @classmethod
    def from_wire(cls, obj: Any, responder: PeerId) -> CellReport:
        """Decode and validate a report `responder` sent about its own cell."""
        if not (isinstance(obj, list) and len(obj) == 3 and obj[0] == TAG):
            raise MalformedFrame("cell report must be [42, digest, seeds]")
        digest = CellDigest.from_wire(obj[1])
        if not digest.cell.contains(cell_key(responder)):
            raise MalformedFrame(f"a member of another cell reported {digest.cell.name()}")
        raw = obj[2]
        if not isinstance(raw, list) or len(raw) > MAX_SEEDS:
            raise MalformedFrame(f"cell report holds at most {MAX_SEEDS} seeds")
        seeds = []
        for s in raw:
            if not (isinstance(s, list) and len(s) == 2 and isinstance(s[0], bytes)):
                raise MalformedFrame("cell report seed must be [peer id bytes, addrs]")
            peer = PeerId.from_bytes(s[0])
            if not digest.cell.contains(cell_key(peer)):
                raise MalformedFrame("cell report seed lies outside the reported cell")
            addrs = strings(s[1], "seed addrs", max_items=MAX_ADDRS, limit=MAX_ADDR_CHARS)
            seeds.append(Seed(peer, addrs))
        return cls(digest, tuple(seeds))


def publisher_rank(peer: PeerId) -> bytes:
    """Members publish in order of sha256(peer id): the smallest is the publisher."""
    return hashlib.sha256(peer.raw).digest()


def is_publisher(me: PeerId, cell_members: list[PeerId]) -> bool:
    """Is `me` the publisher of its cell, as its own view of the members says?"""
    return all(publisher_rank(me) <= publisher_rank(p) for p in cell_members)


def should_publish(me: PeerId, cell_members: list[PeerId], *, placed: bool,
                   found: int | None, unreported: int) -> bool:
    """Does `me` provide its cell's rendezvous record this round? The publisher (smallest
    rank in its view) does once placed (or, unplaced, when the last lookup found no
    provider at all). A placed member ranked `pos`-th also does once its cell has gone
    `pos` + 1 rounds without a fresh report from anyone else (`unreported`): the members
    ranked before it may be unplaced joiners in its view (they publish only once
    placed, and they are placed only by a report they hear) or crashed, and the records
    of crashed publishers linger 48 h, so without this a cell whose publisher crashed
    stays unreported and new joiners never find a report to join by
    (sim/cells_rdv.py, `colony sim combined --nodes 40 --cap 20 --rendezvous dht`)."""
    mine = publisher_rank(me)
    pos = sum(1 for p in cell_members if p != me and publisher_rank(p) < mine)
    if not placed:
        return pos == 0 and found == 0
    return pos == 0 or unreported > pos


def found_after(previous: int | None, reading: int | None) -> int | None:
    """Providers found, for `should_publish` and first placement, after a round whose
    lookup found `reading` (None: the lookup failed). A failed lookup says nothing
    about what is published: it keeps the previous count, so a node whose DHT
    queries time out (30 s) does not read "no cell published" and place itself at the
    root or publish there. Before any reading, a failure counts as 0 as before: a
    lone first node's lookups may have no one to ask."""
    if reading is not None:
        return reading
    return 0 if previous is None else previous


@dataclass(slots=True)
class _Entry:
    report: CellReport
    heard: float
    source: PeerId


class CellDirectory:
    """Reports heard per cell, newest `issued` kept (see the module docstring)."""

    __slots__ = ("_cells", "dropped", "site", "ttl_s")

    def __init__(self, site: str, ttl_s: float) -> None:
        self.site = site
        self.ttl_s = ttl_s
        self._cells: dict[CellId, _Entry] = {}
        #: Reports refused: another site's, or older than the one held.
        self.dropped = 0

    def heard(self, report: CellReport, source: PeerId, now: float) -> bool:
        cell = report.cell
        if cell.site != self.site:
            self.dropped += 1
            return False
        old = self._cells.get(cell)
        if old is not None and now - old.heard <= self.ttl_s \
                and old.report.digest.issued > report.digest.issued:
            self.dropped += 1
            return False
        self._cells.pop(cell, None)  # re-insert: the dict stays ordered by time heard
        while len(self._cells) >= MAX_CELLS:
            del self._cells[next(iter(self._cells))]
        self._cells[cell] = _Entry(report, now, source)
        return True

    def forget_under(self, cell: CellId) -> None:
        """Drop what was heard of cells strictly inside `cell` (it merged)."""
        for c in [c for c in self._cells if c != cell and cell.is_ancestor_of(c)]:
            del self._cells[c]

    def fresh(self, now: float) -> list[tuple[CellReport, float, PeerId]]:
        """Fresh reports (report, age in seconds, source), by cell."""
        return [(e.report, now - e.heard, e.source) for c, e in sorted(self._cells.items())
                if now - e.heard <= self.ttl_s]

    def leaves(self, now: float, exclude: PeerId | None = None) -> list[CellReport]:
        """The current cells: fresh, with no fresh strict descendant (not counting the
        reports `exclude` gave: a node's own report must not hide the others')."""
        fresh = [r for r, _, src in self.fresh(now) if src != exclude]
        cells = [r.cell for r in fresh]
        return [r for r in fresh
                if not any(c != r.cell and r.cell.is_ancestor_of(c) for c in cells)]

    def source(self, cell: CellId, now: float) -> PeerId | None:
        """Who the current report of `cell` came from (None: none fresh)."""
        e = self._cells.get(cell)
        return e.source if e is not None and now - e.heard <= self.ttl_s else None

    def report(self, cell: CellId, now: float) -> CellReport | None:
        e = self._cells.get(cell)
        return e.report if e is not None and now - e.heard <= self.ttl_s else None


def cell_to_adopt(current: CellId, key: int, leaves: list[CellId], *, first: bool,
                  settled: bool, alone: bool, sizes: Mapping[CellId, int] | None = None,
                  live: int = 1, merge_at: float = 0.0) -> CellId | None:
    """The cell to move to, or None (see the module docstring, "Moving"). `leaves`:
    the current cells as the *other* nodes report them; `sizes`: the member counts of
    every fresh report from the others (leaves or not); `live`: this node's own cell
    count; `merge_at`: `merge_below × cap` (0: never up with cell-mates, always down)."""
    up = merged_into(current, key, sizes or {}, live, merge_at) if settled else None
    if up is not None:
        return up
    mine = [c for c in leaves if c.site == current.site]
    if not mine:
        return None
    chosen = choose_cell(key, current.site, mine)
    if chosen == current:
        return None
    if (first or settled) and current.is_ancestor_of(chosen):
        under = sum((sizes or {}).get(c, 0) for c in mine if current.is_ancestor_of(c))
        # Into children that hold fewer than the merge threshold together: no; they
        # are merging into this very cell.
        return chosen if sizes is None or under >= merge_at else None
    if alone and any(c.contains(key) for c in mine):
        return chosen
    return None


def merged_into(current: CellId, key: int, sizes: Mapping[CellId, int], live: int,
                 merge_at: float) -> CellId | None:
    """The deepest reported cell above `current` when it and everything reported under
    it, this node's cell counted as `live`, hold fewer than `merge_at` members: the
    others merged into it without this node. Reports of `current` itself (cell-mates
    stranded alike, or providers that once published it) do not hide it, unlike in
    `leaves`: stranded nodes must not hold each other back."""
    above = [c for c in sizes if c != current and c.is_ancestor_of(current)]
    if not above or live >= merge_at:
        return None
    parent = max(above, key=lambda c: c.depth)
    if not parent.contains(key):
        return None
    rest = sum(n for c, n in sizes.items()
               if c != parent and parent.is_ancestor_of(c) and not current.is_ancestor_of(c))
    return parent if live + rest < merge_at else None
