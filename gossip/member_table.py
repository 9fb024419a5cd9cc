"""The member table: every known member, the probe order and the live count.

SWIM §4.3 (round-robin probe targets over a shuffled list) with memberlist's
state.go bookkeeping (newcomers swapped into a random not-yet-probed slot,
`nodes` / `numNodes`). This is the one place that adds, re-states and removes
members, so its invariants hold by construction:

- `n_live == 1 + #members in ALIVE or SUSPECT` (this node counts itself);
- the probe order holds every member exactly once (a permutation of the table's
  keys), and `0 ≤ probe index ≤ len(probe order)`;
- a member leaves the table only by `remove` (colony expulsion) or `reap` (after its
  tombstone time in DEAD/LEFT);
- a reaped member leaves a *tombstone*: its last alive claim and the signed dead/left
  notice that ended it. At most `MAX_TOMBSTONES` are kept (the oldest is dropped and
  counted in `tombstones_dropped`); a tombstone goes when the member is re-added. The
  state machine refuses alive claims no newer than a tombstone, so a replayed old
  claim cannot resurrect a reaped member, and push-pull hands a restarted member its
  tombstone so that it can outbid it.

Which transitions happen, and when, is decided in gossip/transitions.py; this class
only keeps the books. All randomness comes from the `rng` passed in, in the same
order as the calls, so a seeded core replays exactly. Read access is a mapping
(`table[peer]`, `peer in table`, `table.items()`, …) in insertion order; the values are
`Member` views of the column store (gossip/members.py), fresh per lookup.

The slot dict is keyed by the peer id's bytes (`PeerId.raw`), not the `PeerId`:
a bytes key is hashed in C (and its hash cached), a `PeerId` through a Python
`__hash__` call; every probe, column write and push-pull record looks a member up.
Equal bytes ⟺ equal peer ids, and dicts keep insertion order, so the table's order
and contents are those a `PeerId`-keyed dict would have. Keys are given back as
`PeerId`s (each member's alive claim names it).

Per-member floats that other parts keep (the prober's RTT EWMA and Vivaldi
coordinates) live in `FloatColumn`s attached to the table's slots, so they cost 8
bytes per float instead of a dict entry and boxed floats. A column behaves like a
dict keyed by peer (get, set, pop, len); a value for a peer outside the table is kept
in a small side dict and follows the peer in and out of the table.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView

from gossip.members import LIVE, Member, MemberColumns, MemberState, slot_int
from gossip.messages import Accuse, AdUpdate, Alive, MemberRecord
from overlay.core.ids import PeerId

#: Reaped members remembered (about 1 KiB each, more with a colony certificate chain).
MAX_TOMBSTONES = 4096


class FloatColumn:
    """`width` floats per member, stored in the table's slots (NaN: no value).

    Semantics of a dict peer → tuple of floats; `len` counts the peers with a value.
    Values of peers not in the table (set before they were added, or kept after they
    left) sit in `_extra` and move into the slot when the peer is (re-)added.
    """

    __slots__ = ("_data", "_extra", "_n", "_table", "width")

    def __init__(self, table: MemberTable, width: int) -> None:
        self._table = table
        self.width = width
        self._data = array("d")
        self._n = 0
        self._extra: dict[PeerId, tuple[float, ...]] = {}

    def __len__(self) -> int:
        return self._n

    def __contains__(self, peer: PeerId) -> bool:
        return self.first(peer) is not None

    def get(self, peer: PeerId) -> tuple[float, ...] | None:
        i = self._table._slot.get(peer.raw)
        if i is None:
            return self._extra.get(peer)
        w = self.width
        row = self._data[i * w : i * w + w]
        return None if math.isnan(row[0]) else tuple(row)

    def first(self, peer: PeerId) -> float | None:
        """The first float of `peer`'s value (a width-1 column's value) or None."""
        i = self._table._slot.get(peer.raw)
        if i is None:
            v = self._extra.get(peer)
            return None if v is None else v[0]
        x = self._data[i * self.width]
        return None if math.isnan(x) else x

    def set(self, peer: PeerId, value: tuple[float, ...]) -> None:
        if len(value) != self.width or math.isnan(value[0]):
            raise ValueError("a column value has the column's width and is not NaN")
        i = self._table._slot.get(peer.raw)
        if i is None:
            self._n += peer not in self._extra
            self._extra[peer] = value
            return
        w = self.width
        data = self._data
        self._n += math.isnan(data[i * w])
        if w == 1:  # the RTT column, set on every probe ack
            data[i] = value[0]
        else:
            data[i * w : i * w + w] = array("d", value)

    # The prober writes a coordinate row on every ping and ack and an RTT on every ack:
    # these two do the `in` / `len` / `set` sequence it needs with one slot lookup (each
    # lookup hashes a PeerId in Python), with the same outcome as that sequence.

    def put(self, peer: PeerId, value: tuple[float, ...], cap: int, *,
            members_only: bool = False) -> bool:
        """`set(peer, value)` if `peer` has a value already or fewer than `cap` peers
        do; with `members_only`, only for a peer in the table. False: not stored."""
        i = self._table._slot.get(peer.raw)
        if i is None:
            if members_only or (peer not in self._extra and self._n >= cap):
                return False
            self.set(peer, value)
            return True
        w = self.width
        if len(value) != w or value[0] != value[0]:  # NaN marks an empty slot
            raise ValueError("a column value has the column's width and is not NaN")
        data, j = self._data, i * w
        if data[j] != data[j]:  # no value yet
            if self._n >= cap:
                return False
            self._n += 1
        if w == 6:  # the coordinate row (4-D vector, height, error), twice per probe:
            # six stores convert each float as `array("d", value)` does, without
            # building an array per write (the width was checked above).
            data[j], data[j + 1], data[j + 2], data[j + 3], data[j + 4], data[j + 5] = value
        else:
            data[j : j + w] = array("d", value)
        return True

    def blend(self, peer: PeerId, sample: float, alpha: float, cap: int) -> bool:
        """Width 1: an EWMA step, `old + alpha * (sample - old)`, or `sample` if `peer`
        has no value yet (then only while fewer than `cap` peers have one). False: not
        stored."""
        i = self._table._slot.get(peer.raw)
        data = self._data
        if i is None or self.width != 1:
            old = self.first(peer)
            if old is None and self._n >= cap:
                return False
            self.set(peer, (sample if old is None else old + alpha * (sample - old),))
            return True
        old = data[i]
        if old != old:  # an empty slot (NaN): the first sample, as `set` stores it
            if self._n >= cap:
                return False
            if sample != sample:
                raise ValueError("a column value has the column's width and is not NaN")
            self._n += 1
            data[i] = sample
            return True
        new = old + alpha * (sample - old)
        if new != new:
            raise ValueError("a column value is not NaN")
        data[i] = new
        return True

    def pop(self, peer: PeerId) -> None:
        i = self._table._slot.get(peer.raw)
        if i is None:
            self._n -= self._extra.pop(peer, None) is not None
            return
        w = self.width
        if not math.isnan(self._data[i * w]):
            self._n -= 1
            self._data[i * w : i * w + w] = _nans(w)

    # -- the table's hooks

    def _grow(self, slots: int) -> None:
        missing = slots * self.width - len(self._data)
        if missing > 0:
            # One slot at a time as members join (a join adds thousands): the NaN
            # row of that width is built once, not per call.
            self._data.extend(_NAN_ROWS[missing] if missing < len(_NAN_ROWS) else _nans(missing))

    def _enter(self, peer: PeerId, i: int) -> None:
        """`peer` took slot `i` (empty): bring its value from the side dict."""
        self._grow(i + 1)
        if not self._extra:  # almost always: no `PeerId` hash for an empty dict
            return
        v = self._extra.pop(peer, None)
        if v is not None:
            w = self.width
            self._data[i * w : i * w + w] = array("d", v)

    def _leave(self, peer: PeerId, i: int) -> None:
        """`peer` gives slot `i` up: keep its value in the side dict, empty the slot."""
        w = self.width
        if not math.isnan(self._data[i * w]):
            self._extra[peer] = tuple(self._data[i * w : i * w + w])
            self._data[i * w : i * w + w] = _nans(w)


def _nans(n: int) -> array[float]:
    return array("d", (math.nan,)) * n


#: `_nans(n)` for small n, built once (read only: `extend` copies it).
_NAN_ROWS = tuple(_nans(n) for n in range(9))



def randbelow(rng: random.Random, n: int) -> int:
    """`rng.randrange(n)` for n > 0, drawn exactly as CPython's `Random` draws it
    (`_randbelow_with_getrandbits`: k-bit draws until one is below n), so seeded runs
    keep their output. The stdlib goes through three Python frames per draw (randint
    → randrange → _randbelow) and its argument checks, one draw per member added:
    1.04 → 0.69 µs per draw pure. cProfile blamed it for ≈ 15 % of a compiled cell's
    joins, but measured compiled joins moved only within their noise (docs/
    simulation.md, Performance, "Eighth").
    For `random.Random` and `SystemRandom`, whose `_randbelow` is that method (a
    subclass overriding `random()` alone would draw otherwise; none exists here).
    tests/unit/gossip/test_member_table_draws.py compares the draws with the stdlib's."""
    k = n.bit_length()
    r = rng.getrandbits(k)
    while r >= n:
        r = rng.getrandbits(k)
    return r


class MemberTable(Mapping[PeerId, Member]):
    """Known members (never this node) and their probe order; see the module docstring."""

    __slots__ = ("_cols", "_columns", "_n_live", "_order", "_probe_idx", "_slot", "_tombs",
                 "max_tombstones", "tombstones_dropped")  # fmt: skip

    def __init__(self, max_tombstones: int = MAX_TOMBSTONES) -> None:
        self._slot: dict[bytes, int] = {}  # peer.raw → its slot in `_cols`, table order
        self._cols = MemberColumns()
        self._columns: list[FloatColumn] = []
        self._order: list[PeerId] = []  # every member once: probe order and sampling
        self._probe_idx = 0
        self._n_live = 1  # ALIVE + SUSPECT members, this node included
        #: Reaped members: their last alive claim and the notice that ended them.
        self._tombs: dict[PeerId, MemberRecord] = {}
        self.max_tombstones = max(1, max_tombstones)
        self.tombstones_dropped = 0

    def column(self, width: int) -> FloatColumn:
        """A new per-member float column of `width` floats (see `FloatColumn`)."""
        col = FloatColumn(self, width)
        col._grow(len(self._cols.alive))
        self._columns.append(col)
        return col

    # ------------------------------------------------------------ mapping (read only)

    def __getitem__(self, peer: PeerId) -> Member:
        i = self._slot.get(peer.raw)
        if i is None:
            raise KeyError(peer)
        return Member(self._cols, i)

    def __contains__(self, peer: object) -> bool:
        return isinstance(peer, PeerId) and peer.raw in self._slot

    def __iter__(self) -> Iterator[PeerId]:
        # Each member's alive claim names it: the table's keys, in table order.
        alive = self._cols.alive
        for i in self._slot.values():
            a = alive[i]
            assert a is not None
            yield a.peer

    def __len__(self) -> int:
        return len(self._slot)

    def get(self, peer: PeerId, default: Member | None = None) -> Member | None:  # type: ignore[override]
        i = self._slot.get(peer.raw)
        return default if i is None else Member(self._cols, i)

    def items(self) -> ItemsView[PeerId, Member]:
        return _Items(self)

    def values(self) -> ValuesView[Member]:
        return _Values(self)

    def keys(self) -> KeysView[PeerId]:
        return KeysView(self)

    def state_of(self, peer: PeerId) -> MemberState | None:
        """`peer`'s state, without building a view (hot paths)."""
        i = self._slot.get(peer.raw)
        return None if i is None else _STATES[self._cols.state[i]]

    def records(self) -> list[MemberRecord]:
        """Every member's push-pull record in table order (what `m.record()` gives for
        each value, read straight from the columns: push-pull sends the whole table)."""
        c = self._cols
        alive, accuse, ad_full, ad_deltas = c.alive, c.accuse, c.ad_full, c.ad_deltas
        out: list[MemberRecord] = []
        append = out.append
        for i in self._slot.values():
            a = alive[i]
            assert a is not None
            acc, full = accuse[i], ad_full[i]
            if acc is None and full is None:
                # A member known by its alive claim alone (most of a settled table):
                # the claim's shared record, not a new object per member per exchange.
                r = a.record_cache
                append(a.plain_record() if r is None else r)
            elif acc is None and not ad_deltas[i]:
                assert full is not None
                # Shared as the plain record is (`Alive.ad_record`, its cache read here:
                # no call per member).
                shared = a.ad_record_cache
                append(shared[1] if shared is not None and shared[0] is full
                       else a.ad_record(full))
            else:
                append(MemberRecord(a, acc, () if full is None else (full, *ad_deltas[i])))
        return out

    def accuse_of(self, peer: PeerId) -> Accuse | None:
        """The accusation against `peer` we hold, if any, without building a view."""
        i = self._slot.get(peer.raw)
        return None if i is None else self._cols.accuse[i]

    def alive_lookup(self) -> tuple[Callable[[bytes], int | None], list[Alive | None]]:
        """(slot of a peer's bytes, the alive column): `col[i]` for `i = slot(peer.raw)`
        (not None) is `alive_of(peer)`, without a call per claim, for loops over a whole table's
        claims (push-pull merges). Both stay valid as the table changes (the dict and
        the list are never replaced)."""
        return self._slot.get, self._cols.alive

    def ad_columns(self) -> tuple[list[AdUpdate | None], list[tuple[AdUpdate, ...]], bytearray]:
        """(ad_full, ad_deltas, state) columns, indexed by `alive_lookup`'s slots, for
        push-pull merges to recognise the very ad chain they hold (never replaced)."""
        c = self._cols
        return c.ad_full, c.ad_deltas, c.state

    def alive_of(self, peer: PeerId) -> Alive | None:
        """`peer`'s current alive claim, without building a view (hot paths)."""
        i = self._slot.get(peer.raw)
        return None if i is None else self._cols.alive[i]

    @property
    def n_live(self) -> int:
        """Live members (alive or suspect), this node included."""
        return self._n_live

    @property
    def probe_order(self) -> tuple[PeerId, ...]:
        return tuple(self._order)

    def tombstone(self, peer: PeerId) -> MemberRecord | None:
        """The record `peer` had when it was reaped, if we still remember it."""
        tombs = self._tombs
        # Empty in a cell that reaped nobody: no `PeerId` hash (every new member asks).
        return tombs.get(peer) if tombs else None

    def tombstone_count(self) -> int:
        return len(self._tombs)

    # ------------------------------------------------------------ edits

    def add(self, alive: Alive, now: float, rng: random.Random) -> Member:
        """A new ALIVE member from its first accepted claim. Its probe slot is a random
        not-yet-probed one (memberlist does the same): otherwise every node would probe
        newcomers in the same order."""
        peer = alive.peer
        if peer.raw in self._slot:
            raise ValueError("member already known")
        i = self._slot[peer.raw] = slot_int(self._cols.new(alive, now))
        for col in self._columns:
            col._enter(peer, i)
        if self._tombs:  # empty unless members were reaped: no `PeerId` hash then
            self._tombs.pop(peer, None)
        order = self._order
        order.append(peer)
        start = min(self._probe_idx, len(order) - 1)
        j = start + randbelow(rng, len(order) - start)  # rng.randint(start, len - 1)
        order[-1], order[j] = order[j], order[-1]
        self._n_live += 1
        return Member(self._cols, i)

    def set_state(self, m: Member, state: MemberState, now: float) -> None:
        """Move a member to `state` since `now`, keeping the live count."""
        self._n_live += int(state in LIVE) - int(m.state in LIVE)
        cols, i = self._cols, m._i
        cols.state[i] = state
        cols.since[i] = now

    def _free(self, peer: PeerId) -> MemberRecord:
        """Take `peer` out of the slots; returns its record."""
        i = self._slot.pop(peer.raw)
        rec = Member(self._cols, i).record()
        for col in self._columns:
            col._leave(peer, i)
        self._cols.release(i)
        return rec

    def remove(self, peer: PeerId) -> MemberRecord:
        """Drop one member in any state (colony expulsion); returns its last record."""
        if self.state_of(peer) in LIVE:
            self._n_live -= 1
        rec = self._free(peer)
        self._order = [p for p in self._order if p != peer]
        self._probe_idx = min(self._probe_idx, len(self._order))
        return rec

    def reap(self, horizon: float) -> list[PeerId]:
        """Drop members DEAD or LEFT since `horizon` or earlier; returns them in table
        order. They are not live, so the live count stays."""
        if self._n_live == len(self._slot) + 1:
            return []  # every member is live (the invariant above): nothing to scan for
        cols = self._cols
        state, since, alive = cols.state, cols.since, cols.alive
        dead, left = MemberState.DEAD, MemberState.LEFT
        gone = [
            alive[i].peer  # type: ignore[union-attr]  # a used slot holds a claim
            for i in self._slot.values()
            if (state[i] == dead or state[i] == left) and since[i] <= horizon
        ]
        if not gone:
            return gone
        for p in gone:
            rec = self._free(p)
            self._bury(p, MemberRecord(rec.alive, rec.accuse))
        gone_set = set(gone)
        self._order = [p for p in self._order if p not in gone_set]
        self._probe_idx = min(self._probe_idx, len(self._order))
        return gone

    def _bury(self, peer: PeerId, rec: MemberRecord) -> None:
        self._tombs.pop(peer, None)
        if len(self._tombs) >= self.max_tombstones:
            del self._tombs[next(iter(self._tombs))]
            self.tombstones_dropped += 1
        self._tombs[peer] = rec

    # ------------------------------------------------------------ choosing members

    def next_probe_target(self, rng: random.Random) -> PeerId | None:
        """The next live member in probe order; reshuffles at the end of each pass.

        As memberlist's `probe` (state.go): skip members that are not live, wrap and
        reshuffle at the end of the order, and keep looking until a live member or a
        whole pass of the new order. So a call returns a target whenever a live
        member exists (a probe period is never skipped while one does), and None
        only when none does; it reshuffles at most once.
        """
        order = self._order
        slot, state, suspect = self._slot, self._cols.state, MemberState.SUSPECT
        reshuffled = False
        while order:
            if self._probe_idx >= len(order):
                if reshuffled:
                    return None  # a whole pass of the new order: nothing live
                self._probe_idx = 0
                rng.shuffle(order)
                reshuffled = True
            peer = order[self._probe_idx]
            self._probe_idx += 1
            if state[slot[peer.raw]] <= suspect:  # ALIVE or SUSPECT
                return peer
        return None

    def sample(
        self,
        k: int,
        states: tuple[MemberState, ...],
        rng: random.Random,
        *,
        exclude: PeerId | None = None,
        dead_since: float | None = None,
    ) -> list[PeerId]:
        """Up to k distinct random members in `states` (or DEAD since `dead_since`),
        O(k): a bounded number of draws, so a mostly dead table may yield fewer."""
        order = self._order
        if k <= 0 or not order:
            return []
        chosen: dict[PeerId, None] = {}
        for _ in range(4 * k + 8):
            peer = order[randbelow(rng, len(order))]  # rng.randrange(len(order))
            if peer == exclude or peer in chosen:
                continue
            i = self._slot[peer.raw]
            st = _STATES[self._cols.state[i]]
            if st in states or (
                dead_since is not None and st is MemberState.DEAD
                and self._cols.since[i] >= dead_since
            ):
                chosen[peer] = None
                if len(chosen) >= k:
                    break
        return list(chosen)

    def check_invariants(self) -> None:
        """Raise AssertionError if the books disagree (tests call this)."""
        live = sum(1 for i in self._slot.values() if _STATES[self._cols.state[i]] in LIVE)
        assert self._n_live == 1 + live, (self._n_live, live)
        assert len(self._order) == len(self._slot)
        assert {p.raw for p in self._order} == set(self._slot)
        assert all(p.raw == raw for p, raw in zip(self, self._slot, strict=True))
        used = sorted(self._slot.values())
        assert len(set(used)) == len(used)
        assert not set(used) & set(self._cols.free)
        assert len(used) + len(self._cols.free) == len(self._cols.alive)
        assert 0 <= self._probe_idx <= len(self._order)
        assert len(self._tombs) <= self.max_tombstones
        assert not {p.raw for p in self._tombs} & self._slot.keys()
        for col in self._columns:
            n_in = sum(1 for i in used if not math.isnan(col._data[i * col.width]))
            assert col._n == n_in + len(col._extra), (col._n, n_in, len(col._extra))
            assert not {p.raw for p in col._extra} & self._slot.keys()


_STATES = tuple(MemberState)


class _Items(ItemsView[PeerId, Member]):
    """(peer, view) pairs in table order, views built as iterated."""

    _mapping: MemberTable

    def __iter__(self) -> Iterator[tuple[PeerId, Member]]:
        cols = self._mapping._cols
        alive = cols.alive
        for i in self._mapping._slot.values():
            a = alive[i]
            assert a is not None
            yield a.peer, Member(cols, i)


class _Values(ValuesView[Member]):
    """Member views in table order."""

    _mapping: MemberTable

    def __iter__(self) -> Iterator[Member]:
        cols = self._mapping._cols
        for i in self._mapping._slot.values():
            yield Member(cols, i)
