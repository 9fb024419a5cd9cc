"""Plumtree: epidemic broadcast trees over one topic's active view (sans-IO).

Leitão, Pereira, Rodrigues, "Epidemic Broadcast Trees", SRDS 2007, §3. Learned from
n0-computer/iroh-gossip `src/proto/plumtree.rs`; written here against the Colony core
contract.

Every neighbour (HyParView active view) starts as an *eager* peer: the first payload
travels by flooding, and each duplicate makes its link *lazy* (PRUNE back). What is
left is a spanning tree: payloads go eagerly along it, and every other link carries
only IHAVE(id, round), batched for `ihave_delay_s`. When an announced id does not
arrive within `graft_timeout_s`, the node GRAFTs the announcer (the link becomes
eager again and the payload is sent), then tries the next announcer every
`graft_retry_s`. Optimisation (§3.8): a payload that arrives `optimize_threshold`
hops later than an IHAVE for it announced makes the shorter lazy link eager and
prunes the long one.

Payload ids are sha256(payload); a Gossip whose id does not match is dropped and
counted. `round` is the hop count; `Delivered.hop` is what LDH (last delivery hop)
measures.

Bounds (nothing grows with N): eager ∪ lazy ⊆ the active view; the payload cache
keeps at most `cache_max` entries for at most `cache_ttl_s`; the seen-id set at most
`seen_max` for `seen_ttl_s`; `missing` at most `missing_max` ids with at most
`announcers_max` announcers each; the IHAVE queue at most `MAX_IHAVES` ids per peer.
Overflow evicts the oldest entry and is counted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from gossip.topic_messages import (
    MAX_IHAVES,
    MAX_ROUND,
    BroadcastMessage,
    Gossip,
    Graft,
    IHave,
    Prune,
)
from overlay.core.effects import Effect, Emit, Send, SetTimer
from overlay.core.errors import ConfigError
from overlay.core.ids import PeerId


@dataclass(frozen=True, slots=True)
class PlumtreeConfig:
    ihave_delay_s: float = 0.05
    graft_timeout_s: float = 0.5
    graft_retry_s: float = 0.25
    optimize_threshold: int = 7
    cache_max: int = 1024
    cache_ttl_s: float = 30.0
    seen_max: int = 8192
    seen_ttl_s: float = 90.0
    missing_max: int = 1024
    announcers_max: int = 8

    def __post_init__(self) -> None:
        if min(self.ihave_delay_s, self.graft_timeout_s, self.graft_retry_s,
               self.cache_ttl_s, self.seen_ttl_s) <= 0:
            raise ConfigError("plumtree: delays and ttls must be positive")
        if min(self.cache_max, self.seen_max, self.missing_max, self.announcers_max) < 1:
            raise ConfigError("plumtree: bounds must be ≥ 1")


@dataclass(frozen=True, slots=True)
class Delivered:
    """A payload reached this node for the first time, after `hop` hops."""

    topic: bytes
    msg_id: bytes
    payload: bytes
    hop: int
    sender: PeerId | None  # None: we broadcast it


def message_id(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


class Plumtree:
    """Broadcast state of one node in one topic. Entry points return effects.

    Timer ids: `("pt", topic, "ihave")`, `("pt", topic, "graft", id)`,
    `("pt", topic, "evict")`.
    """

    __slots__ = ("_evict_at", "_ihave_due", "cache", "cfg", "counters", "eager", "lazy",
                 "lazy_queue", "me", "missing", "seen", "topic")

    def __init__(self, me: PeerId, topic: bytes, cfg: PlumtreeConfig) -> None:
        self.me = me
        self.topic = topic
        self.cfg = cfg
        self.eager: dict[PeerId, None] = {}
        self.lazy: dict[PeerId, None] = {}
        self.lazy_queue: dict[PeerId, list[tuple[bytes, int]]] = {}
        #: id → [(announcer, round)] for ids we heard of but do not have.
        self.missing: dict[bytes, list[tuple[PeerId, int]]] = {}
        # Both ordered by insertion = by expiry (constant ttl): evict from the front.
        self.cache: dict[bytes, tuple[Gossip, float]] = {}
        self.seen: dict[bytes, float] = {}
        self._ihave_due = False
        self._evict_at: float | None = None
        self.counters: dict[str, int] = {
            "bad_id": 0, "duplicates": 0, "grafts_sent": 0, "graft_miss": 0,
            "cache_evicted": 0, "seen_evicted": 0, "missing_evicted": 0, "ihave_dropped": 0,
            "not_neighbor": 0,
        }

    # ------------------------------------------------------------ neighbours

    def neighbor_up(self, peer: PeerId) -> None:
        self.lazy.pop(peer, None)
        self.eager[peer] = None

    def neighbor_down(self, peer: PeerId) -> None:
        self.eager.pop(peer, None)
        self.lazy.pop(peer, None)
        self.lazy_queue.pop(peer, None)
        for mid in list(self.missing):
            anns = [a for a in self.missing[mid] if a[0] != peer]
            if anns:
                self.missing[mid] = anns
            else:
                del self.missing[mid]

    # ------------------------------------------------------------ commands

    def broadcast(self, payload: bytes, now: float) -> list[Effect]:
        out: list[Effect] = []
        g = Gossip(self.topic, message_id(payload), 0, payload)
        if g.msg_id in self.seen:
            return out
        self._remember(g, now, out)
        out.append(Emit(Delivered(self.topic, g.msg_id, payload, 0, None)))
        self._push(g, None, out, now)
        return out

    # ------------------------------------------------------------ inputs

    def on_message(self, peer: PeerId, msg: BroadcastMessage, now: float) -> list[Effect]:
        out: list[Effect] = []
        t = type(msg)
        if t is Gossip:
            self._on_gossip(peer, msg, out, now)  # type: ignore[arg-type]
        elif peer not in self.eager and peer not in self.lazy:
            # Tree control only on links of the active view: a stray IHAVE or GRAFT
            # from elsewhere would leave state no NeighborDown ever clears.
            self.counters["not_neighbor"] += 1
        elif t is IHave:
            self._on_ihave(peer, msg.items, out, now)  # type: ignore[union-attr]
        elif t is Graft:
            self._on_graft(peer, msg, out)  # type: ignore[arg-type]
        elif t is Prune:
            if peer in self.eager:
                del self.eager[peer]
                self.lazy[peer] = None
        return out

    def on_timer(self, timer: tuple[Any, ...], now: float) -> list[Effect]:
        out: list[Effect] = []
        kind = timer[2]
        if kind == "ihave":
            self._flush_ihaves(out)
        elif kind == "graft":
            self._graft_next(timer[3], out, now)
        elif kind == "evict":
            self._evict_at = None
            self._expire(now, out)
        return out

    # ------------------------------------------------------------ handlers

    def _on_gossip(self, peer: PeerId, g: Gossip, out: list[Effect], now: float) -> None:
        if g.msg_id in self.seen:
            # A duplicate: this link is redundant, make it lazy (§3.3).
            self.counters["duplicates"] += 1
            if peer in self.eager:
                del self.eager[peer]
                self.lazy[peer] = None
                out.append(Send(peer, Prune(self.topic)))
            return
        if message_id(g.payload) != g.msg_id:
            self.counters["bad_id"] += 1
            return
        if peer in self.lazy:
            # A payload came over this link (a graft answer): it is a tree link now.
            del self.lazy[peer]
            self.eager[peer] = None
        nxt = Gossip(self.topic, g.msg_id, min(g.round + 1, MAX_ROUND), g.payload)
        self._remember(nxt, now, out)
        out.append(Emit(Delivered(self.topic, g.msg_id, g.payload, g.round + 1, peer)))
        anns = self.missing.pop(g.msg_id, None)
        if anns:
            self._optimize(peer, g.round, anns, out)
        self._push(nxt, peer, out, now)

    def _optimize(self, sender: PeerId, rnd: int, anns: list[tuple[PeerId, int]],
                  out: list[Effect]) -> None:
        """§3.8: a much shorter lazy path replaces the eager one that delivered."""
        best_peer, best_round = min(anns, key=lambda a: a[1])
        if rnd - best_round < self.cfg.optimize_threshold:
            return
        if best_peer not in self.eager and best_peer in self.lazy:
            del self.lazy[best_peer]
            self.eager[best_peer] = None
            out.append(Send(best_peer, Graft(self.topic, None, best_round)))
        if sender in self.eager:
            del self.eager[sender]
            self.lazy[sender] = None
            out.append(Send(sender, Prune(self.topic)))

    def _on_ihave(self, peer: PeerId, items: tuple[tuple[bytes, int], ...],
                  out: list[Effect], now: float) -> None:
        for mid, rnd in items:
            if mid in self.seen:
                continue
            anns = self.missing.get(mid)
            if anns is None:
                if len(self.missing) >= self.cfg.missing_max:
                    del self.missing[next(iter(self.missing))]
                    self.counters["missing_evicted"] += 1
                self.missing[mid] = [(peer, rnd)]
                out.append(SetTimer(("pt", self.topic, "graft", mid),
                                    now + self.cfg.graft_timeout_s))
            elif len(anns) < self.cfg.announcers_max:
                anns.append((peer, rnd))

    def _graft_next(self, mid: bytes, out: list[Effect], now: float) -> None:
        anns = self.missing.get(mid)
        if not anns or mid in self.seen:
            self.missing.pop(mid, None)
            return
        # An emptied entry stays until its next timer, so a late announcer can be used.
        peer, rnd = anns.pop(0)
        self.lazy.pop(peer, None)
        self.eager[peer] = None
        self.counters["grafts_sent"] += 1
        out.append(Send(peer, Graft(self.topic, mid, rnd)))
        out.append(SetTimer(("pt", self.topic, "graft", mid), now + self.cfg.graft_retry_s))

    def _on_graft(self, peer: PeerId, gr: Graft, out: list[Effect]) -> None:
        self.lazy.pop(peer, None)
        self.eager[peer] = None
        if gr.msg_id is None:
            return
        hit = self.cache.get(gr.msg_id)
        if hit is None:
            self.counters["graft_miss"] += 1
            return
        out.append(Send(peer, hit[0]))

    # ------------------------------------------------------------ push

    def _push(self, g: Gossip, sender: PeerId | None, out: list[Effect], now: float) -> None:
        for p in self.eager:
            if p != sender:
                out.append(Send(p, g))
        queued = False
        for p in self.lazy:
            if p == sender:
                continue
            q = self.lazy_queue.setdefault(p, [])
            if len(q) >= MAX_IHAVES:
                self.counters["ihave_dropped"] += 1
                continue
            q.append((g.msg_id, g.round))
            queued = True
        if queued and not self._ihave_due:
            self._ihave_due = True
            out.append(SetTimer(("pt", self.topic, "ihave"), now + self.cfg.ihave_delay_s))

    def _flush_ihaves(self, out: list[Effect]) -> None:
        self._ihave_due = False
        for p, items in self.lazy_queue.items():
            if items and p in self.lazy:
                out.append(Send(p, IHave(self.topic, tuple(items))))
        self.lazy_queue.clear()

    # ------------------------------------------------------------ bounded memory

    def _remember(self, g: Gossip, now: float, out: list[Effect]) -> None:
        cfg = self.cfg
        if len(self.seen) >= cfg.seen_max:
            del self.seen[next(iter(self.seen))]
            self.counters["seen_evicted"] += 1
        self.seen[g.msg_id] = now + cfg.seen_ttl_s
        if len(self.cache) >= cfg.cache_max:
            del self.cache[next(iter(self.cache))]
            self.counters["cache_evicted"] += 1
        self.cache[g.msg_id] = (g, now + cfg.cache_ttl_s)
        self._arm_evict(out)

    def _arm_evict(self, out: list[Effect]) -> None:
        """One timer at the earliest expiry, only while something can expire."""
        if self._evict_at is not None:
            return
        first: float | None = None
        if self.cache:
            first = next(iter(self.cache.values()))[1]
        if self.seen:
            s = next(iter(self.seen.values()))
            first = s if first is None else min(first, s)
        if first is not None:
            self._evict_at = first
            out.append(SetTimer(("pt", self.topic, "evict"), first))

    def _expire(self, now: float, out: list[Effect]) -> None:
        while self.cache and next(iter(self.cache.values()))[1] <= now:
            del self.cache[next(iter(self.cache))]
        while self.seen and next(iter(self.seen.values())) <= now:
            del self.seen[next(iter(self.seen))]
        self._arm_evict(out)

    def entries(self) -> int:
        """Entries held across every map: bounded by the config, never by N."""
        return (len(self.eager) + len(self.lazy) + len(self.cache) + len(self.seen)
                + sum(len(a) for a in self.missing.values()) + len(self.missing)
                + sum(len(q) for q in self.lazy_queue.values()))
