"""The state of one SWIM + Lifeguard gossip core and the helpers every part shares.

`SwimState` is the bottom layer of `gossip.swim.Swim`; each layer above adds one part
of the protocol and may use only the layers below it:

    SwimState          state, counters, member-state transitions, random sampling
    Dissemination      piggyback budget, gossip rounds, signed ads      (dissemination.py)
    UserEventGossip    user events: send, verify, ordered delivery      (user_event_gossip.py)
    ColonyGate         colony mode: admission, refusals, revocations    (colony_gate.py)
    Accusations        suspicion, death, refutation (Lifeguard §IV-B)   (accusations.py)
    Probing            probe rounds, ping/ack/nack/ping-req, RTT        (probing.py)
    AntiEntropy        push-pull state exchange and reaping             (push_pull.py)
    Swim               `handle`, commands, timers, message dispatch, alive claims, queries

The one call that goes upwards, `_apply_update`, is declared here and dispatched by
`Swim`. Every map and queue created here has a maximum in `SwimConfig`; overflow is a
counted drop in `stats`.

Invariants: own incarnation never decreases; member incarnations never decrease
(except by reaping); `_n_live` counts ALIVE + SUSPECT members plus this node.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from gossip.admission import Admission
from gossip.awareness import Awareness
from gossip.broadcast_queue import BroadcastQueue
from gossip.coordinates import Coord
from gossip.members import Member, MemberState
from gossip.messages import Accuse, AdUpdate, Alive
from gossip.profiles import LAN, SwimConfig
from gossip.resources import ResourceAd
from gossip.suspicion import Suspicion
from gossip.trust import AccuserLimiter, Verifier
from gossip.user_events import EventOrderer
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.effects import Effect
from overlay.core.ids import PeerId

if TYPE_CHECKING:
    from gossip.probing import ProbeRound

#: Member states that count as live (probed, gossiped to, listed).
LIVE = (MemberState.ALIVE, MemberState.SUSPECT)
#: Weight of a new probe RTT sample in the per-member EWMA.
RTT_ALPHA = 0.2


class SwimState:
    """State shared by the layers of the gossip core; see the module docstring."""

    def __init__(
        self,
        keys: KeyPair,
        config: SwimConfig = LAN,
        *,
        rng: random.Random,
        ad: ResourceAd | None = None,
        addrs: tuple[str, ...] = (),
        initial_incarnation: int = 0,
        verifier: Verifier | None = None,
        admission: Admission | None = None,
        chain: tuple[Envelope, ...] = (),
    ) -> None:
        self.keys = keys
        self.me = keys.peer_id
        self.config = config
        self.rng = rng
        self.addrs = tuple(addrs[: config.max_addrs])
        self.incarnation = initial_incarnation
        #: Colony mode gate (None: open mode) and our own certificate chain.
        self.admission = admission
        self.chain = tuple(chain)
        self._alive = Alive.create(keys, initial_incarnation, self.addrs, self.chain)
        self._refused: dict[PeerId, tuple[str, float]] = {}
        self._expiry_at = math.inf
        #: Colony mode: members a message came from (they know us; `_introduce`).
        #: Kept outside `Member` so open mode pays nothing; membership tests only.
        self._heard: set[PeerId] = set()
        self.members: dict[PeerId, Member] = {}
        self._ids: list[PeerId] = []  # every member once: probe order and sampling
        self._probe_idx = 0
        self._n_live = 1  # ALIVE + SUSPECT members, self included
        self._suspicions: dict[PeerId, Suspicion] = {}
        self.awareness = Awareness(config.awareness_max_multiplier, enabled=config.lifeguard)
        self._bq = BroadcastQueue(config.max_broadcasts)
        self._uq = BroadcastQueue(config.max_user_events_queued, newest_first=False)
        self._probe: ProbeRound | None = None
        self._seq = 0
        self._relays: dict[int, tuple[PeerId, int, PeerId]] = {}
        self._seeds: tuple[PeerId, ...] = ()
        self.started = False
        self.leaving = False
        self.stopped = False
        self._left: Accuse | None = None
        self._events = EventOrderer(
            config.max_event_senders, config.max_holdback_per_sender, config.holdback_s
        )
        self._event_seq = 0
        self.verifier = verifier or Verifier(config.verify_cache_size)
        self._limiter = AccuserLimiter(
            config.accuse_burst,
            config.accuse_refill_per_probe / config.probe_interval_s,
            config.max_accusers,
        )
        self.coord = Coord()
        self._coords: dict[PeerId, Coord] = {}
        self._rtt: dict[PeerId, float] = {}
        self.ad = ad
        self._ad_version = -1
        self._ad_full: AdUpdate | None = None
        self._ad_deltas: tuple[AdUpdate, ...] = ()
        self.stats: dict[str, int] = {}

    def _count(self, what: str, n: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + n

    def _apply_update(self, u: Any, now: float, out: list[Effect], *, merge: bool) -> None:
        """Apply one signed update (alive, accusation, ad, user event, revocation).
        Dispatched by `gossip.swim.Swim`; declared here because lower layers (colony
        admission, push-pull) feed updates back in."""
        raise NotImplementedError

    def _set_state(self, m: Member, state: MemberState, now: float) -> None:
        was_live = m.state in LIVE
        is_live = state in LIVE
        self._n_live += int(is_live) - int(was_live)
        m.state = state
        m.since = now

    def _sample(
        self,
        k: int,
        states: tuple[MemberState, ...],
        *,
        exclude: PeerId | None = None,
        dead_since: float | None = None,
    ) -> list[PeerId]:
        """Up to k distinct random members in `states` (or recently dead), O(k)."""
        ids = self._ids
        if k <= 0 or not ids:
            return []
        chosen: dict[PeerId, None] = {}
        for _ in range(4 * k + 8):
            peer = ids[self.rng.randrange(len(ids))]
            if peer == exclude or peer in chosen:
                continue
            m = self.members[peer]
            if m.state in states or (
                dead_since is not None and m.state is MemberState.DEAD and m.since >= dead_since
            ):
                chosen[peer] = None
                if len(chosen) >= k:
                    break
        return list(chosen)
