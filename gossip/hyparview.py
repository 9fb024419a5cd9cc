"""HyParView: the partial-view membership of one topic swarm (sans-IO).

Leitão, Pereira, Rodrigues, "HyParView: a membership protocol for reliable
gossip-based broadcast", DSN 2007. Each node keeps a small symmetric *active view*
(the peers it holds connections to and gossips with; default 5 ≈ log10(N) + 1) and a
larger *passive view* (default 30 ≈ 6×, addresses only) from which it repairs the
active view when a neighbour fails. Learned from n0-computer/iroh-gossip
`src/proto/hyparview.rs`; written here against the Colony core contract.

Protocol (paper §4):
- JOIN: the contact takes the new node into its active view (dropping a random member
  with DISCONNECT if full) and sends FORWARDJOIN(new, ARWL=6) to its other neighbours.
  A walk ends (TTL 0, or a node with ≤ 1 neighbour) by a NEIGHBOR(high) request to the
  new node; at TTL = PRWL (3) the node also keeps the new one in its passive view.
- NEIGHBOR(high|low) → NEIGHBORREPLY(accepted). High is never refused (the sender has no
  neighbour at all); low is accepted only into a free slot. Unlike the paper, nobody
  enters an active view before the other side accepted (as iroh-gossip does): an
  unreachable peer never becomes a neighbour, and a reply that comes after our timeout
  is answered with DISCONNECT, so the views stay symmetric.
- DISCONNECT(alive): the sender dropped us; if alive we keep it in the passive view.
- Failure detection is the connection's: `Disconnected(peer)` for a neighbour, or
  `PeerUnreachable(peer)`, removes it, and the node promotes passive peers (NEIGHBOR,
  high if it has no neighbour left) until the active view is full again.
- SHUFFLE every `shuffle_interval_s` (±10 %): a walk of TTL 6 carrying ka=3 active and
  kp=4 passive peers plus ourselves; its end replies with as many passive peers and
  both sides merge, evicting first the peers they sent (§4.4).

Invariants (tests/property/test_hyparview_props.py): me ∉ active ∪ passive;
active ∩ passive = ∅; |active| ≤ active_size; |passive| ≤ passive_size;
|pending| ≤ 2·active_size. Nothing here grows with the swarm's size.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from gossip.topic_messages import (
    MAX_SHUFFLE_PEERS,
    Disconnect,
    ForwardJoin,
    Join,
    MembershipMessage,
    Neighbor,
    NeighborReply,
    Shuffle,
    ShuffleReply,
)
from overlay.core.effects import Effect, Emit, Send, SetTimer
from overlay.core.errors import ConfigError
from overlay.core.ids import PeerId


@dataclass(frozen=True, slots=True)
class HyParViewConfig:
    """Paper defaults (§5: active 5, passive 30, ARWL 6, PRWL 3, ka 3, kp 4)."""

    active_size: int = 5
    passive_size: int = 30
    arwl: int = 6
    prwl: int = 3
    shuffle_ttl: int = 6
    shuffle_active: int = 3
    shuffle_passive: int = 4
    shuffle_interval_s: float = 60.0
    #: A NEIGHBOR/JOIN without a reply after this long counts as a failed dial.
    neighbor_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.active_size <= 32 or not 1 <= self.passive_size <= 1024:
            raise ConfigError("hyparview: active_size in [1, 32], passive_size in [1, 1024]")
        if not 0 <= self.prwl <= self.arwl <= 32 or not 0 <= self.shuffle_ttl <= 32:
            raise ConfigError("hyparview: 0 ≤ prwl ≤ arwl ≤ 32 and shuffle_ttl ≤ 32")
        if self.shuffle_active + self.shuffle_passive + 1 > MAX_SHUFFLE_PEERS:
            raise ConfigError("hyparview: shuffle sample larger than the wire allows")
        if self.shuffle_interval_s <= 0 or self.neighbor_timeout_s <= 0:
            raise ConfigError("hyparview: intervals must be positive")

    @classmethod
    def for_size(cls, n: int, **overrides: Any) -> HyParViewConfig:
        """Views sized for an expected swarm of `n`: active log10(n)+1, passive 6×."""
        active = max(2, math.ceil(math.log10(max(n, 2))) + 1)
        fields: dict[str, Any] = {"active_size": active, "passive_size": 6 * active}
        fields.update(overrides)
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class NeighborUp:
    """`peer` entered the active view of `topic` (Plumtree starts it as eager)."""

    topic: bytes
    peer: PeerId


@dataclass(frozen=True, slots=True)
class NeighborDown:
    """`peer` left the active view of `topic`."""

    topic: bytes
    peer: PeerId


class HyParView:
    """The views of one node in one topic. Entry points return effects.

    Timer ids: `("hpv", topic, "shuffle")` and `("hpv", topic, "nbr", peer)`.
    """

    __slots__ = ("_refusals", "_sent_sample", "_started", "active", "cfg", "counters", "me",
                 "passive", "pending", "rng", "topic")

    def __init__(self, me: PeerId, topic: bytes, cfg: HyParViewConfig,
                 rng: random.Random) -> None:
        self.me = me
        self.topic = topic
        self.cfg = cfg
        self.rng = rng
        # dicts, not sets: insertion order keeps every random pick deterministic.
        self.active: dict[PeerId, None] = {}
        self.passive: dict[PeerId, None] = {}
        #: NEIGHBOR/JOIN requests awaiting a reply → True for a JOIN.
        self.pending: dict[PeerId, bool] = {}
        self._sent_sample: tuple[PeerId, ...] = ()
        self._started = False
        #: Refusals since the last shuffle tick: after `active_size` of them the node
        #: waits for the next tick instead of asking its whole passive view in a row.
        self._refusals = 0
        self.counters: dict[str, int] = {"refused": 0, "pending_full": 0, "late_reply": 0}

    # ------------------------------------------------------------ commands

    def join(self, contacts: tuple[PeerId, ...], now: float) -> list[Effect]:
        """Start (once) and JOIN through the first contact; the rest wait in passive."""
        out: list[Effect] = []
        self._start(now, out)
        first = True
        for c in contacts:
            if c == self.me:
                continue
            if first and c not in self.active:
                self._request(c, out, now, join=True)
                first = False
            else:
                self._add_passive(c)
        return out

    def leave(self) -> list[Effect]:
        """Tell every neighbour we are going (DISCONNECT, not alive) and forget them."""
        out: list[Effect] = []
        for p in list(self.active):
            out.append(Send(p, Disconnect(self.topic, False)))
            out.append(Emit(NeighborDown(self.topic, p)))
        self.active.clear()
        self.pending.clear()
        return out

    # ------------------------------------------------------------ inputs

    def on_message(self, peer: PeerId, msg: MembershipMessage, now: float) -> list[Effect]:
        out: list[Effect] = []
        if peer == self.me:
            return out
        self._start(now, out)
        t = type(msg)
        if t is Join:
            self._on_join(peer, out)
        elif t is ForwardJoin:
            self._on_forward_join(peer, msg, out, now)  # type: ignore[arg-type]
        elif t is Neighbor:
            self._on_neighbor(peer, msg.high, out)  # type: ignore[union-attr]
        elif t is NeighborReply:
            self._on_reply(peer, msg.accepted, out, now)  # type: ignore[union-attr]
        elif t is Disconnect:
            self._on_disconnect(peer, msg.alive, out, now)  # type: ignore[union-attr]
        elif t is Shuffle:
            self._on_shuffle(peer, msg, out)  # type: ignore[arg-type]
        elif t is ShuffleReply:
            self._merge(msg.peers, self._sent_sample)  # type: ignore[union-attr]
            self._sent_sample = ()
            self._refill(out, now)
        return out

    def on_timer(self, timer: tuple[Any, ...], now: float) -> list[Effect]:
        out: list[Effect] = []
        kind = timer[2]
        if kind == "shuffle":
            self._shuffle(out, now)
        elif kind == "nbr":
            peer = timer[3]
            if self.pending.pop(peer, None) is not None:
                # No answer in time: treat it as a failed dial (paper §4.3).
                self.passive.pop(peer, None)
                self._refill(out, now)
        return out

    def peer_failed(self, peer: PeerId, now: float, *, unreachable: bool) -> list[Effect]:
        """The connection to `peer` closed (`Disconnected`) or could not be opened."""
        out: list[Effect] = []
        was_pending = self.pending.pop(peer, None) is not None
        if peer in self.active:
            # Not kept as passive: a closed connection is the failure signal (§4.3).
            self._drop_active(peer, out)
        if unreachable or was_pending:
            self.passive.pop(peer, None)
        self._refill(out, now)
        return out

    # ------------------------------------------------------------ handlers

    def _on_join(self, peer: PeerId, out: list[Effect]) -> None:
        self._add_active(peer, out)
        out.append(Send(peer, NeighborReply(self.topic, True)))
        fj = ForwardJoin(self.topic, peer, self.cfg.arwl)
        for p in self.active:
            if p != peer:
                out.append(Send(p, fj))

    def _on_forward_join(self, sender: PeerId, fj: ForwardJoin, out: list[Effect],
                         now: float) -> None:
        new = fj.peer
        if new == self.me or new in self.active or new in self.pending:
            return
        nxt = None
        if fj.ttl > 0 and len(self.active) > 1:
            nxt = self._pick(self.active, (sender, new))
        if nxt is None:
            # The walk ends here: ask the new node to be our neighbour (§4.2 (i)).
            self._request(new, out, now, high=True)
            return
        if fj.ttl == self.cfg.prwl:
            self._add_passive(new)
        out.append(Send(nxt, ForwardJoin(self.topic, new, fj.ttl - 1)))

    def _on_neighbor(self, peer: PeerId, high: bool, out: list[Effect]) -> None:
        if peer in self.active or high or len(self.active) < self.cfg.active_size:
            self._add_active(peer, out)
            self.pending.pop(peer, None)
            out.append(Send(peer, NeighborReply(self.topic, True)))
        else:
            self.counters["refused"] += 1
            self._add_passive(peer)
            out.append(Send(peer, NeighborReply(self.topic, False)))

    def _on_reply(self, peer: PeerId, accepted: bool, out: list[Effect], now: float) -> None:
        was_pending = self.pending.pop(peer, None) is not None
        if not accepted:
            self._add_passive(peer)
            self._refusals += 1
            if self._refusals <= self.cfg.active_size:
                self._refill(out, now, skip=peer)
            return
        if peer in self.active:
            return
        if not was_pending:
            # We gave up on this request already; undo the peer's side.
            self.counters["late_reply"] += 1
            self._add_passive(peer)
            out.append(Send(peer, Disconnect(self.topic, True)))
            return
        self._add_active(peer, out)

    def _on_disconnect(self, peer: PeerId, alive: bool, out: list[Effect], now: float) -> None:
        self.pending.pop(peer, None)
        if peer in self.active:
            self._drop_active(peer, out)
        if alive:
            self._add_passive(peer)
        else:
            self.passive.pop(peer, None)
        self._refill(out, now, skip=peer)

    def _on_shuffle(self, sender: PeerId, sh: Shuffle, out: list[Effect]) -> None:
        if sh.origin == self.me:
            return
        if sh.ttl > 1 and len(self.active) > 1:
            nxt = self._pick(self.active, (sender, sh.origin))
            if nxt is not None:
                out.append(Send(nxt, Shuffle(self.topic, sh.origin, sh.peers, sh.ttl - 1)))
                return
        reply = self._sample(self.passive, len(sh.peers), ())
        if len(reply) < len(sh.peers):
            reply += self._sample(self.active, len(sh.peers) - len(reply), (sh.origin,))
        out.append(Send(sh.origin, ShuffleReply(self.topic, reply)))
        self._merge(sh.peers, reply)

    def _shuffle(self, out: list[Effect], now: float) -> None:
        cfg = self.cfg
        jitter = cfg.shuffle_interval_s * (0.9 + 0.2 * self.rng.random())
        out.append(SetTimer(("hpv", self.topic, "shuffle"), now + jitter))
        self._refusals = 0
        self._refill(out, now)
        target = self._pick(self.active, ())
        if target is None:
            return
        sample = (self._sample(self.active, cfg.shuffle_active, (target,))
                  + self._sample(self.passive, cfg.shuffle_passive, ()))
        self._sent_sample = sample
        out.append(Send(target, Shuffle(self.topic, self.me, (self.me, *sample),
                                        cfg.shuffle_ttl)))

    # ------------------------------------------------------------ view changes

    def _start(self, now: float, out: list[Effect]) -> None:
        if not self._started:
            self._started = True
            first = now + self.cfg.shuffle_interval_s * self.rng.random()
            out.append(SetTimer(("hpv", self.topic, "shuffle"), first))

    def _request(self, peer: PeerId, out: list[Effect], now: float, *,
                 high: bool = False, join: bool = False) -> None:
        """Send JOIN or NEIGHBOR to `peer` and wait for its reply (bounded)."""
        if peer == self.me or peer in self.active or peer in self.pending:
            return
        if len(self.pending) >= 2 * self.cfg.active_size:
            self.counters["pending_full"] += 1
            return
        self.pending[peer] = join
        out.append(Send(peer, Join(self.topic) if join else Neighbor(self.topic, high)))
        out.append(SetTimer(("hpv", self.topic, "nbr", peer), now + self.cfg.neighbor_timeout_s))

    def _refill(self, out: list[Effect], now: float, skip: PeerId | None = None) -> None:
        """Promote passive peers until active + pending fills the active view (§4.3)."""
        want = self.cfg.active_size - len(self.active) - len(self.pending)
        while want > 0:
            cand = self._pick(self.passive, (skip,), exclude=self.pending)
            if cand is None:
                return
            self._request(cand, out, now, high=not self.active)
            want -= 1

    def _add_active(self, peer: PeerId, out: list[Effect]) -> None:
        if peer == self.me or peer in self.active:
            return
        if len(self.active) >= self.cfg.active_size:
            victim = self._pick(self.active, ())
            assert victim is not None
            self._drop_active(victim, out)
            out.append(Send(victim, Disconnect(self.topic, True)))
            self._add_passive(victim)
        self.passive.pop(peer, None)
        self.active[peer] = None
        out.append(Emit(NeighborUp(self.topic, peer)))

    def _drop_active(self, peer: PeerId, out: list[Effect]) -> None:
        del self.active[peer]
        out.append(Emit(NeighborDown(self.topic, peer)))

    def _add_passive(self, peer: PeerId, prefer_evict: tuple[PeerId, ...] = ()) -> None:
        if peer == self.me or peer in self.active or peer in self.passive:
            return
        if len(self.passive) >= self.cfg.passive_size:
            victim = next((p for p in prefer_evict if p in self.passive), None)
            if victim is None:
                victim = self._pick(self.passive, (), exclude=self.pending)
            if victim is None:
                return
            del self.passive[victim]
        self.passive[peer] = None

    def _merge(self, peers: tuple[PeerId, ...], sent: tuple[PeerId, ...]) -> None:
        """Shuffle merge: evict the peers we sent first, then random ones (§4.4)."""
        for p in peers:
            self._add_passive(p, sent)

    # ------------------------------------------------------------ random picks

    def _pick(self, view: dict[PeerId, None], skip: tuple[PeerId | None, ...],
              exclude: dict[PeerId, bool] | None = None) -> PeerId | None:
        # Dict lookups, not tuple scans: a PeerId's __eq__ is a Python-level call.
        drop = {s: None for s in skip if s is not None and s in view}
        if exclude:
            drop.update((p, None) for p in exclude if p in view)
        if not drop:
            return list(view)[self.rng.randrange(len(view))] if view else None
        cands = [p for p in view if p not in drop]
        return cands[self.rng.randrange(len(cands))] if cands else None

    def _sample(self, view: dict[PeerId, None], k: int,
                skip: tuple[PeerId, ...]) -> tuple[PeerId, ...]:
        cands = [p for p in view if p not in skip]
        if len(cands) <= k:
            return tuple(cands)
        return tuple(self.rng.sample(cands, k))

    def entries(self) -> int:
        """Entries held (views, pending, last shuffle sample): bounded by the config."""
        return len(self.active) + len(self.passive) + len(self.pending) + len(self._sent_sample)
