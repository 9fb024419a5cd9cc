"""Piggybacked dissemination: retransmit-limited, fewest-sent-first, byte-budgeted.

memberlist queue.go keeps a btree ordered by (transmits, -id); we keep one dict per
transmit count (insertion order; newest first within a count), which gives the same
fewest-sent-first order with O(1) insert and invalidation. Each update is sent at
most `retransmit_limit(N) = mult × ceil(log10(N + 1))` times.

Invalidation: an update has a key (e.g. ("m", peer) for membership of `peer`); queuing
a new update with the same key replaces the old one (a newer incarnation supersedes
an older). Bounded: beyond `max_items` the oldest most-sent entry is dropped and
counted in `dropped`.

Two queues, one budget (`take_split`): user events get first claim on `user_share` of
every message and membership on the rest; whatever one side leaves unused, the other
may fill. memberlist lets membership churn starve user broadcasts at ~1,000 nodes; this
split cannot.

Cost: `take` stops scanning once the budget left is below the smallest possible
update (`MIN_UPDATE_SIZE`), so a message costs O(updates taken), not O(queue) (a
joiner queues every member it learns, thousands of claims). The buckets are keyed by
the item objects themselves (identity hash, in C), not the update keys (tuples
holding a `PeerId`, hashed through a Python `__hash__` per lookup); the key → item
index is touched once per queue, invalidation and retirement.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from gossip.messages import Update, UserEvent, update_size

#: No update is smaller: `update_size` is `len(body) + len(kind) + 111` and a kind is
#: never empty (a received update is verified against a named kind; our own are
#: signed with one).
MIN_UPDATE_SIZE = 112


def retransmit_limit(mult: int, n_members: int) -> int:
    return mult * max(1, math.ceil(math.log10(n_members + 1)))


class _Item:
    __slots__ = ("key", "size", "transmits", "update")

    def __init__(self, key: Hashable, update: Update, size: int) -> None:
        self.key = key
        self.update = update
        self.size = size
        self.transmits = 0


class BroadcastQueue:
    __slots__ = ("_buckets", "_index", "dropped", "max_items", "newest_first")

    def __init__(self, max_items: int, *, newest_first: bool = True) -> None:
        self.max_items = max_items
        #: Membership: newest first (memberlist). User events: oldest first, so one
        #: sender's events tend to arrive in order.
        self.newest_first = newest_first
        #: transmits -> {item: None}, each bucket in insertion order (items hash by
        #: identity: a bucket lookup never hashes the update's key).
        self._buckets: dict[int, dict[_Item, None]] = {}
        self._index: dict[Hashable, _Item] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._index

    def queue(self, key: Hashable, update: Update) -> None:
        old = self._index.pop(key, None)
        if old is not None:
            self._remove_from_bucket(old)
        elif len(self._index) >= self.max_items:
            self._drop_one()
        item = _Item(key, update, update_size(update.env))
        self._index[key] = item
        self._buckets.setdefault(0, {})[item] = None

    def invalidate(self, key: Hashable) -> None:
        old = self._index.pop(key, None)
        if old is not None:
            self._remove_from_bucket(old)
            if not self._index:
                self._release()

    def _release(self) -> None:
        """Free an emptied index's table: a dict never shrinks on deletion, so one that
        held a join's burst of claims would keep that table for the life of the node
        (≈ 18 KB for 250 claims, ≈ 300 KB for 4,096); `clear()` frees it. The same
        dict object stays: `Swim` reads it directly (`_bq_index`)."""
        self._index.clear()

    def _remove_from_bucket(self, item: _Item) -> None:
        bucket = self._buckets[item.transmits]
        del bucket[item]
        if not bucket:
            del self._buckets[item.transmits]

    def _drop_one(self) -> None:
        worst = max(self._buckets)
        item = next(iter(self._buckets[worst]))
        del self._index[item.key]
        self._remove_from_bucket(item)
        self.dropped += 1

    def take(
        self,
        budget: int,
        limit: int,
        out: list[Update],
        skip: set[Hashable] | None = None,
    ) -> int:
        """Append updates fitting in `budget` bytes, fewest-sent first; return bytes used.

        Each taken update counts one transmission; updates reaching `limit` leave the
        queue. An update larger than the whole budget is skipped (the caller sizes
        budgets so every legal update fits one); keys in `skip` are not taken (they are
        already in this message).
        """
        used = 0
        taken: list[_Item] = []
        buckets = self._buckets
        if budget < MIN_UPDATE_SIZE:
            return used  # nothing fits
        full = False
        for t in sorted(buckets):
            bucket = buckets[t]
            for item in reversed(bucket) if self.newest_first else bucket:
                if used + item.size <= budget and (skip is None or item.key not in skip):
                    taken.append(item)
                    used += item.size
                    if budget - used < MIN_UPDATE_SIZE:
                        full = True  # no further update can fit: stop scanning
                        break
            if full or budget - used < MIN_UPDATE_SIZE:
                break
        index = self._index
        for item in taken:
            t = item.transmits
            bucket = buckets[t]
            del bucket[item]
            if not bucket:
                del buckets[t]
            t += 1
            item.transmits = t
            if t >= limit:
                del index[item.key]
            else:
                nxt = buckets.get(t)
                if nxt is None:
                    buckets[t] = {item: None}
                else:
                    nxt[item] = None
            out.append(item.update)
        if taken and not index:
            self._release()
        return used

    def keys(self) -> list[Any]:
        return list(self._index)


def take_split(
    members: BroadcastQueue,
    users: BroadcastQueue,
    budget: int,
    user_share: float,
    limit: int,
) -> list[Update]:
    """Fill one message: users first up to their share, membership, then leftovers."""
    out: list[Update] = []
    user_budget = int(budget * user_share)
    used = users.take(user_budget, limit, out) if len(users) else 0
    n_user = len(out)
    if len(members):
        used += members.take(budget - used, limit, out)
    if len(users) and budget - used >= MIN_UPDATE_SIZE:
        skip = {(u.sender, u.seq) for u in out[:n_user] if isinstance(u, UserEvent)}
        users.take(budget - used, limit, out, skip={("ev", *k) for k in skip})
    return out
