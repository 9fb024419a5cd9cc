"""The capsule core as a part of the daemon's node, and what it is fed from gossip.

- `members_changed`: the live gossip set with each member's resource ad mapped for
  placement (`node_ad`; slots from a `slots=N` ad tag) and roles (every role in open
  mode; the admitted certificate's roles in colony mode).
- `CapsulePart`: wraps `CapsuleCore` with the runtime's view of reachability and the
  start-up gate (see its docstring), plus the runtime-only commands `RestoreCustody`,
  `Activate` and `RefreshMembers`. Connectivity arrives as inputs (`Connected`,
  `Disconnected`, `PeerUnreachable`), never as a callback into the transport.
- `executor_config`: this node's executor capacity from `[capsule]` and the kinds that
  really work here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gossip.members import MemberState
from gossip.resources import ResourceAd
from overlay.capsule.core import COMMAND_TYPES, CapsuleCore
from overlay.capsule.executor import ExecutorConfig
from overlay.capsule.members import DEFAULT_ROLES, Member, MembersChanged
from overlay.capsule.placement import NodeAd
from overlay.core.certs import Certificate
from overlay.core.effects import Connected, Disconnected, Effect, PeerUnreachable, Received
from overlay.core.errors import ColonyError
from overlay.core.ids import PeerId

if TYPE_CHECKING:
    from gossip.swim import Swim

#: Resource-ad tag carrying the executor slot count (gossip ads have no slot field).
SLOTS_TAG = "slots="
MAX_HIDDEN = 4096
#: Capsule messages held while the part is inactive (see `CapsulePart`).
MAX_HELD = 256
#: Peers tracked as connected; `Connected` inputs beyond it are counted and dropped
#: (such a peer only counts as unconnected: hidden a little longer, never wrongly kept).
MAX_CONNECTED = 4096
#: How long a peer reported unreachable stays out of custodian sets unless it is
#: connected again: about SWIM's time to declare a crashed member dead on the lan
#: profile (probe round + suspicion), after which gossip's view excludes it anyway.
#: Being unconnected proves nothing (connections are made on demand), so a longer
#: hide would keep a live, restarted peer out for no reason.
HIDE_S = 10.0


def parse_labels(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ColonyError(f"[capsule] labels: {item!r} is not key=value")
        out.append((k.strip(), v.strip()))
    return tuple(sorted(out))


def executor_config(conf: dict[str, dict[str, Any]], kinds: tuple[str, ...]) -> ExecutorConfig:
    """This node's executor capacity: `[capsule]` settings, kinds that really work here."""
    c = conf.get("capsule", {})
    page, pages = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES")
    return ExecutorConfig(
        slots=int(c.get("slots", 4)),
        cpu=float(os.cpu_count() or 1),
        mem_mib=(page * pages) >> 20,
        executors=kinds,
        labels=parse_labels(c.get("labels", [])),
        location=str(c.get("location", "")),
    )


def node_ad(ad: ResourceAd | None) -> NodeAd | None:
    """Placement's view of a gossiped resource ad (slots come from a `slots=N` tag)."""
    if ad is None:
        return None
    slots = 0
    for tag in ad.tags:
        if tag.startswith(SLOTS_TAG):
            try:
                slots = max(0, int(tag[len(SLOTS_TAG):]))
            except ValueError:
                slots = 0  # a peer's junk tag: it offers no slots
    return NodeAd(cpu=float(ad.cpu_cores), cpu_load=ad.cpu_load, mem_mib=ad.mem_bytes >> 20,
                  gpu=ad.gpus, executors=ad.executors, labels=ad.labels, location=ad.location,
                  free_slots=slots)  # fmt: skip


def _roles(swim: Swim, peer: PeerId, is_self: bool) -> tuple[str, ...]:
    """Open mode: every member may do everything. Colony mode: the roles of the leaf
    certificate gossip admitted the member with (placement only offers leases to
    members with `execute`; submissions are checked by custody against the chain)."""
    admission = getattr(swim, "admission", None)
    if admission is None:
        return DEFAULT_ROLES
    try:
        if is_self:
            chain = getattr(swim, "chain", ())
            leaf = Certificate.from_envelope(chain[-1]) if chain else None
        else:
            certs = admission.chain_for(peer)
            leaf = certs[-1] if certs else None
    except ColonyError:
        leaf = None
    return tuple(sorted(leaf.roles)) if leaf is not None else ()


def members_changed(swim: Swim) -> MembersChanged:
    """The capsule core's input: every live member (self included) with its ad."""
    out = []
    for m in swim.list_members():
        rtt = None if m.is_self else swim.rtt_estimate(m.peer)
        out.append(Member(m.peer, node_ad(m.ad), _roles(swim, m.peer, m.is_self), rtt))
    dead = MemberState.DEAD
    failed = sum(1 for _, m in swim.members.items() if m.state is dead)
    return MembersChanged(tuple(out), failed)


@dataclass(frozen=True, slots=True)
class RestoreCustody:
    """Command: persisted custody records to hand back to the core at start."""

    records: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Activate:
    """Command: the node has joined; give the core its first view and let peers in."""


@dataclass(frozen=True, slots=True)
class Relabel:
    """Command: this node's labels changed while it runs (the executor checks offers
    against them; the gossiped ad carries them to placement)."""

    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RefreshMembers:
    """Command (periodic): re-read the live set; un-hide peers that are reachable again."""


class CapsulePart:
    """The capsule core as a node part, with the runtime's view of reachability.

    The driver reports `PeerUnreachable` on every dropped connection and failed dial,
    and py-libp2p drops connections that are re-made at once. The core hides such a
    peer from its custodian sets until its next `MembersChanged`, so a spurious report
    would move leadership around for nothing. Here a report for a peer that is still
    (or again) connected is dropped; another hides the peer for `hide_s`, and every
    view given to the core (from gossip, or the periodic `RefreshMembers`) leaves out
    hidden peers that are still not connected. A crashed custodian is thus out of
    every set at once, and a peer that comes back is in again within a refresh.

    The part stays inactive until the daemon has joined the colony and membership
    has settled (`activate`): before that, its view would hold only this node, which
    would then lead every capsule alone — and a node restarted from its custody store
    would re-run leases the others already settled. Meanwhile capsule messages from
    peers are held (at most `MAX_HELD`, more are counted and dropped) and handed to
    the core right after the first view: not every sender retries — a follower's
    takeover hand-off to a node that just rejoined and now leads is sent once, and
    dropping it left the capsule RUNNING with no process behind it (found by the
    fault campaign: `colony sim campaign --seeds 1 --start 0 --only Leave`).

    Which peers are connected the part learns from the driver's `Connected` and
    `Disconnected` inputs (in the order the transport reported them; tracked while
    inactive too), at most `MAX_CONNECTED` of them.
    """

    COMMANDS: tuple[type, ...] = (
        *COMMAND_TYPES, RestoreCustody, RefreshMembers, Activate, Connected, Disconnected,
        Relabel,
    )

    def __init__(self, core: CapsuleCore, members: Callable[[], MembersChanged] | None = None,
                 hide_s: float = HIDE_S) -> None:  # fmt: skip
        self.core = core
        self.members = members
        self.hide_s = hide_s
        #: Peers the driver reported connected (insertion order; used as a set).
        self._connected: dict[PeerId, None] = {}
        self.dropped_connected = 0
        self._hidden: dict[PeerId, float] = {}
        self._last: MembersChanged | None = None
        self.dropped_unreachable = 0
        self.active = False
        self.dropped_inactive = 0
        #: Peers' capsule messages received while inactive, handed over at `Activate`.
        self._held: list[Received] = []

    def is_connected(self, peer: PeerId) -> bool:
        """As last reported by the driver (`Connected` / `Disconnected` inputs)."""
        return peer in self._connected

    def _track(self, inp: Connected | Disconnected) -> list[Effect]:
        if isinstance(inp, Disconnected):
            self._connected.pop(inp.peer, None)
        elif inp.peer in self._connected or len(self._connected) < MAX_CONNECTED:
            self._connected[inp.peer] = None
        else:
            self.dropped_connected += 1
        return []

    def _filtered(self, mc: MembersChanged, now: float) -> MembersChanged:
        for p, until in list(self._hidden.items()):
            if until <= now or self.is_connected(p):
                del self._hidden[p]
        if not self._hidden:
            return mc
        kept = tuple(m for m in mc.members if m.peer not in self._hidden)
        return MembersChanged(kept, mc.failed + len(mc.members) - len(kept))

    def handle(self, inp: Any, now: float) -> list[Effect]:
        if isinstance(inp, Connected | Disconnected):
            return self._track(inp)
        if not self.active and isinstance(
            inp, Received | MembersChanged | RefreshMembers | PeerUnreachable
        ):
            if isinstance(inp, Received) and len(self._held) < MAX_HELD:
                self._held.append(inp)
            else:
                self.dropped_inactive += 1
            return []
        if isinstance(inp, Activate):
            self.active = True
            effects = self.handle(RefreshMembers(), now)
            held, self._held = self._held, []
            for r in held:  # in arrival order, now that the core has its view
                effects += self.core.handle(r, now)
            return effects
        if isinstance(inp, MembersChanged | RefreshMembers):
            if isinstance(inp, MembersChanged):
                fresh = inp
            elif self.members is not None:
                fresh = self.members()
            else:
                return []
            mc = self._filtered(fresh, now)
            if isinstance(inp, RefreshMembers) and mc == self._last:
                return []  # nothing changed: spare the core a re-evaluation of every record
            self._last = mc
            return self.core.handle(mc, now)
        if isinstance(inp, PeerUnreachable):
            if inp.peer == self.core.me or self.is_connected(inp.peer):
                self.dropped_unreachable += 1
                return []
            if len(self._hidden) < MAX_HIDDEN or inp.peer in self._hidden:
                self._hidden[inp.peer] = now + self.hide_s
            # The core now hides the peer until its next view: make sure the next
            # refresh sends one, so the peer is back as soon as it is reachable.
            self._last = None
            return self.core.handle(inp, now)
        if isinstance(inp, Relabel):
            self.core.executor.relabel(inp.labels)
            return []
        if isinstance(inp, RestoreCustody):
            restore = getattr(self.core, "restore", None)
            if restore is None:  # the core does not persist custody yet: nothing to do
                return []
            effects = restore(inp.records, now)
            return list(effects or [])
        return self.core.handle(inp, now)
