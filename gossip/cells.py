"""Cells: which tier-1 SWIM pool a node belongs to, and when a pool splits or merges.

Full-membership SWIM costs O(N) state and O(N) push-pull per node, so a pool (a *cell*,
DESIGN §6) has a size cap (default 5,000: Consul's advice per pool). A cell is a leaf of
a binary trie over a 64-bit *cell key*, the first 8 bytes of sha256(peer id) (peer ids
share their multihash prefix, the hash spreads them uniformly), optionally under a
*site* label:

- `CellId(site, depth, prefix)` holds every key whose top `depth` bits are `prefix`;
  the cells of one site are the leaves of that site's trie, a prefix-free cover of the
  key space (every key in exactly one cell). Site "" is the default trie.
- Split: a cell whose live count stayed above `cap` for `hold_s` becomes its two
  children (depth + 1); each member moves to the child holding its own key, so the
  halves are binomial(n, 1/2) and no coordination is needed: every member decides
  from its own SWIM view, and members that decide a little later only keep more
  members for a while (they drop the other half when they split too).
- Merge: when a cell and its sibling (known from the sibling's cell digest, carried
  across cells by tier 2) hold together fewer than `merge_below × cap` live members
  for `hold_s`, both go back to the parent. The gap between `cap` and
  `merge_below × cap` (hysteresis) keeps a cell near the threshold from flapping.
- Joining: a node takes the known cell holding its key; if it knows only cells that
  do not (the trie was split elsewhere), the cover invariant says its leaf is at
  least one level below its longest common prefix with any of them (`choose_cell`).

Why key prefixes, and site labels as an override: prefixes are deterministic, need no
agreement protocol (a split is a local decision every member reaches from the same
count), and balance cells statistically whatever the churn; network coordinates
would give lower in-cell RTTs but move nodes between cells as coordinates drift,
and a cell's members are probed round-robin anyway. Operators who want cells per data
centre (probes across an ocean cost latency and false suspicions) set `site`: cells are
then split by prefix *within* a site.

`CellCore` is sans-IO: `handle(inp, now) -> list[Effect]`, timers as effects, the rng
only jitters the check timer. Invariants: `cell.contains(key)` for this node's key at
all times; the depth changes by one per decision.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from overlay.core.effects import Effect, Emit, SetTimer, TimerFired
from overlay.core.errors import LocalProtocolError
from overlay.core.ids import PeerId

KEY_BITS = 64
MAX_DEPTH = 48
DEFAULT_CAP = 5000
MAX_SITE_CHARS = 64
CHECK_TIMER = ("cells", "check")


def cell_key(peer: PeerId) -> int:
    """The node's 64-bit cell key: the first 8 bytes of sha256(peer id bytes)."""
    return int.from_bytes(hashlib.sha256(peer.raw).digest()[:8], "big")


@dataclass(frozen=True, slots=True, order=True)
class CellId:
    """The keys whose top `depth` bits are `prefix`, under `site` ("" = no site)."""

    site: str = ""
    depth: int = 0
    prefix: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.depth <= MAX_DEPTH:
            raise ValueError(f"cell depth must be in [0, {MAX_DEPTH}]")
        if not 0 <= self.prefix < (1 << self.depth):
            raise ValueError("cell prefix must have `depth` bits")
        if len(self.site) > MAX_SITE_CHARS or "/" in self.site:
            raise ValueError("cell site must be ≤ 64 characters without '/'")

    @classmethod
    def of(cls, key: int, depth: int, site: str = "") -> CellId:
        """The depth-`depth` cell holding `key`."""
        return cls(site, depth, key >> (KEY_BITS - depth) if depth else 0)

    def contains(self, key: int) -> bool:
        return self.depth == 0 or key >> (KEY_BITS - self.depth) == self.prefix

    def child(self, bit: int) -> CellId:
        return CellId(self.site, self.depth + 1, (self.prefix << 1) | bit)

    def children(self) -> tuple[CellId, CellId]:
        return self.child(0), self.child(1)

    def parent(self) -> CellId | None:
        return None if self.depth == 0 else CellId(self.site, self.depth - 1, self.prefix >> 1)

    def sibling(self) -> CellId | None:
        return None if self.depth == 0 else CellId(self.site, self.depth, self.prefix ^ 1)

    def is_ancestor_of(self, other: CellId) -> bool:
        """`other` lies inside this cell (or is it)."""
        return (self.site == other.site and other.depth >= self.depth
                and other.prefix >> (other.depth - self.depth) == self.prefix)  # fmt: skip

    def name(self) -> str:
        """`site/0110` (bits of the prefix; `site/` for the root)."""
        bits = format(self.prefix, f"0{self.depth}b") if self.depth else ""
        return f"{self.site}/{bits}"

    @classmethod
    def parse(cls, text: str) -> CellId:
        site, sep, bits = text.rpartition("/")
        if not sep or any(b not in "01" for b in bits):
            raise ValueError(f"not a cell name: {text!r}")
        return cls(site, len(bits), int(bits, 2) if bits else 0)


def common_prefix_len(key: int, cell: CellId) -> int:
    """How many leading bits of `key` agree with `cell`'s prefix (≤ its depth)."""
    if cell.depth == 0:
        return 0
    diff = (key >> (KEY_BITS - cell.depth)) ^ cell.prefix
    return cell.depth - diff.bit_length()


def choose_cell(key: int, site: str, known: list[CellId]) -> CellId:
    """The cell a node with `key` joins, given the cells it knows of (leaves of the
    trie, e.g. from cell digests found in the DHT): the known leaf holding `key`, else
    the cell one level below the longest common prefix with a known leaf of `site`
    (the leaf holding `key` is at least that deep), else the site's root."""
    mine = [c for c in known if c.site == site]
    for c in sorted(mine, key=lambda c: -c.depth):
        if c.contains(key):
            return c
    if not mine:
        return CellId.of(key, 0, site)
    depth = min(MAX_DEPTH, max(common_prefix_len(key, c) + 1 for c in mine))
    return CellId.of(key, depth, site)


class CellMap:
    """The cells of every site: leaves of a binary trie per site (a prefix-free cover
    of the key space). What the simulator's oracle and the tests use; a node knows
    only its own cell and the digests it heard."""

    __slots__ = ("_leaves",)

    def __init__(self) -> None:
        self._leaves: dict[str, dict[tuple[int, int], None]] = {}

    def leaves(self, site: str = "") -> list[CellId]:
        found = self._leaves.get(site)
        if found is None:
            return [CellId(site)]
        return sorted(CellId(site, d, p) for d, p in found)

    def find(self, key: int, site: str = "") -> CellId:
        found = self._leaves.get(site)
        if found is None:
            return CellId(site)
        for depth in range(MAX_DEPTH + 1):
            c = CellId.of(key, depth, site)
            if (c.depth, c.prefix) in found:
                return c
        raise AssertionError("the leaves do not cover the key space")

    def split(self, cell: CellId) -> tuple[CellId, CellId]:
        leaves = self._leaves.setdefault(cell.site, {(0, 0): None})
        if (cell.depth, cell.prefix) not in leaves:
            raise ValueError(f"{cell.name()} is not a cell")
        if cell.depth >= MAX_DEPTH:
            raise ValueError("cell too deep to split")
        del leaves[(cell.depth, cell.prefix)]
        kids = cell.children()
        for k in kids:
            leaves[(k.depth, k.prefix)] = None
        return kids

    def merge(self, cell: CellId) -> CellId:
        """Merge `cell` with its sibling (both must be leaves); returns the parent."""
        parent, sib = cell.parent(), cell.sibling()
        leaves = self._leaves.get(cell.site, {(0, 0): None})
        if parent is None or sib is None:
            raise ValueError("the root cell has no sibling")
        if (cell.depth, cell.prefix) not in leaves or (sib.depth, sib.prefix) not in leaves:
            raise ValueError("both siblings must be cells to merge")
        del leaves[(cell.depth, cell.prefix)], leaves[(sib.depth, sib.prefix)]
        leaves[(parent.depth, parent.prefix)] = None
        self._leaves[cell.site] = leaves
        return parent

    def check_invariants(self) -> None:
        """Per site: the leaves are prefix-free and cover the space (Kraft sum 1)."""
        for site, leaves in self._leaves.items():
            total = sum(2 ** (MAX_DEPTH - d) for d, _ in leaves)
            assert total == 2**MAX_DEPTH, (site, total)
            cells = [CellId(site, d, p) for d, p in leaves]
            for a in cells:
                for b in cells:
                    assert a == b or not a.is_ancestor_of(b), (a.name(), b.name())


# ---------------------------------------------------------------- the per-node core


@dataclass(frozen=True, slots=True)
class CellConfig:
    cap: int = DEFAULT_CAP
    #: Merge when a cell and its sibling together hold fewer than this × cap.
    merge_below: float = 0.5
    #: A split or merge condition must hold this long (all members see it).
    hold_s: float = 60.0
    check_interval_s: float = 10.0
    #: A sibling's digest older than this is not evidence for a merge.
    digest_ttl_s: float = 300.0

    def __post_init__(self) -> None:
        if self.cap < 2 or not 0.0 < self.merge_below < 1.0:
            raise ValueError("cell cap must be ≥ 2 and merge_below in (0, 1)")
        if min(self.hold_s, self.check_interval_s, self.digest_ttl_s) <= 0:
            raise ValueError("cell timings must be positive")


@dataclass(frozen=True, slots=True)
class StartCells:
    """Command: start in `cell` (from `choose_cell`); arms the check timer."""

    cell: CellId


@dataclass(frozen=True, slots=True)
class CellSize:
    """Input: the live count of this node's cell as its SWIM view sees it."""

    live: int


@dataclass(frozen=True, slots=True)
class SiblingSize:
    """Input: a digest of another cell arrived (tier 2): its id and live count."""

    cell: CellId
    live: int


@dataclass(frozen=True, slots=True)
class CellChanged:
    """Event: this node moved from `old` to `new` (a split or a merge). The driver
    tells SWIM which members to keep (`new.contains(cell_key(peer))`)."""

    old: CellId
    new: CellId
    reason: str  # "split" | "merge"


@dataclass(slots=True)
class _Pending:
    what: str
    since: float


@dataclass(slots=True)
class CellCore:
    """This node's cell, split and merge decisions (see the module docstring)."""

    me: PeerId
    config: CellConfig
    rng: random.Random
    site: str = ""
    key: int = field(init=False)
    cell: CellId = field(init=False)
    live: int = 1
    started: bool = False
    pending: _Pending | None = None
    #: Last digest heard of each other cell: cell → (live, when).
    heard: dict[CellId, tuple[int, float]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = cell_key(self.me)
        self.cell = CellId.of(self.key, 0, self.site)

    def handle(self, inp: Any, now: float) -> list[Effect]:
        out: list[Effect] = []
        t = type(inp)
        if t is StartCells:
            if not inp.cell.contains(self.key) or inp.cell.site != self.site:
                raise LocalProtocolError("a node starts in a cell holding its own key")
            self.cell, self.started = inp.cell, True
            self._arm(now, out)
        elif t is CellSize:
            self.live = max(1, int(inp.live))
        elif t is SiblingSize:
            self._heard(inp, now)
        elif t is TimerFired and inp.timer == CHECK_TIMER and self.started:
            self._check(now, out)
            self._arm(now, out)
        return out

    def _heard(self, inp: SiblingSize, now: float) -> None:
        if inp.cell == self.cell or inp.live < 0:
            self.stats["digest_ignored"] = self.stats.get("digest_ignored", 0) + 1
            return
        if len(self.heard) >= 4096 and inp.cell not in self.heard:
            del self.heard[next(iter(self.heard))]
        self.heard[inp.cell] = (inp.live, now)

    def _arm(self, now: float, out: list[Effect]) -> None:
        jitter = self.config.check_interval_s * (0.9 + 0.2 * self.rng.random())
        out.append(SetTimer(CHECK_TIMER, now + jitter))

    def wants(self, now: float) -> str | None:
        """"split", "merge" or None: what the current counts call for."""
        cfg = self.config
        if self.live > cfg.cap and self.cell.depth < MAX_DEPTH:
            return "split"
        sib = self.cell.sibling()
        if sib is not None:
            heard = self.heard.get(sib)
            if heard is not None and now - heard[1] <= cfg.digest_ttl_s:
                if self.live + heard[0] < cfg.merge_below * cfg.cap:
                    return "merge"
        return None

    def _check(self, now: float, out: list[Effect]) -> None:
        want = self.wants(now)
        if want is None or (self.pending is not None and self.pending.what != want):
            self.pending = None if want is None else _Pending(want, now)
            return
        if self.pending is None:
            self.pending = _Pending(want, now)
            return
        if now - self.pending.since < self.config.hold_s:
            return
        old = self.cell
        if want == "split":
            new = old.child((self.key >> (KEY_BITS - old.depth - 1)) & 1)
        else:
            parent = old.parent()
            assert parent is not None
            new = parent
        self.cell, self.pending = new, None
        self.heard.pop(new, None)
        self.stats[want] = self.stats.get(want, 0) + 1
        out.append(Emit(CellChanged(old, new, want)))

    def in_cell(self, peer: PeerId) -> bool:
        """Does `peer` belong to this node's cell (by key; the site is the caller's)?"""
        return self.cell.contains(cell_key(peer))
