"""A whole node as one sans-IO core: dht, gossip, exchange and capsule cores composed.

The driver (trio) and the simulator each run exactly one core per node; this module
makes the node's several protocol cores look like one:

- Inputs are routed by type: `Received(peer, msg)` goes to the part registered for
  `type(msg)`, commands to the part registered for the command's type, and
  `PeerUnreachable` to every part.
- Timer ids are namespaced `(part name, inner id)`, so parts cannot collide.
- Events a part emits can be *wired* to other parts: a wiring function turns an
  event into commands for another part (gossip's member-joined → dht's add-peer),
  and the event is also emitted upwards for the node's owner (API, metrics, sim).

Keeping the wiring here, as data, is what lets every core stay ignorant of the others.
Wiring runs to a fixed depth (`MAX_CASCADE`), so two parts cannot loop forever.

`build_node` is the one composition of the production cores, used by the daemon
(overlay/runtime/daemon.py) and the simulator (sim/runner.py) alike. It reads no files,
environment or clocks: configuration, addresses, the resource ad and the block source
arrive as parameters. Parts are added in a fixed order (gossip, dht, exchange, capsule;
`PeerUnreachable` reaches them in that order) and each core's rng is seeded by one
64-bit draw from the caller's rng, gossip's first, so a seeded caller builds the same
node every time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from dht.api import COMMAND_TYPES as DHT_COMMANDS
from dht.api import AddPeer, KadConfig
from dht.core import Kademlia
from dht.wire import DhtRequest, DhtResponse
from gossip.admission import Admission
from gossip.cell_node import CellNode
from gossip.cells import CellConfig, CellCore, SiblingSize, StartCells
from gossip.claim_verifier import Verifier
from gossip.events import COMMAND_TYPES as GOSSIP_COMMANDS
from gossip.events import (
    MemberExpelled,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberLeftCell,
    MemberReaped,
    MemberUpdated,
)
from gossip.messages import MESSAGE_TYPES as GOSSIP_MESSAGES
from gossip.profiles import SwimConfig
from gossip.resources import ResourceAd
from gossip.swim import Swim
from overlay.capsule.core import CapsuleCore
from overlay.capsule.messages import MESSAGE_TYPES as CAPSULE_MESSAGES
from overlay.capsule.part import CapsulePart, members_changed
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.effects import (
    CancelTimer,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.core.errors import LocalProtocolError
from overlay.core.ids import PeerId
from overlay.exchange.engine import AddProviders, BlockSource, CancelFetch, Exchange, Fetch
from overlay.exchange.messages import BitswapMessage

MAX_CASCADE = 4


class Part(Protocol):
    def handle(self, inp: Any, now: float) -> list[Effect]: ...


Wiring = Callable[[Any], Iterable[tuple[str, Any]]]


class Node:
    def __init__(self, me: PeerId) -> None:
        self.me = me
        self.parts: dict[str, Part] = {}
        self._msg_route: dict[type, str] = {}
        self._cmd_route: dict[type, str] = {}
        self._wiring: dict[type, list[Wiring]] = {}
        #: Parts with a `quick_tick(timer, now)` fast path (see `Node.quick_tick`).
        self._quick: dict[str, Callable[[Any, float], float | None]] = {}
        #: The node's timer ids `quick_tick` may answer for (it says None for any
        #: other), from each such part's `QUICK_TIMERS`; None if a part names none. A
        #: driver asking after every timer (the simulator) skips the rest.
        self.quick_timers: set[tuple[str, Any]] | None = set()
        self.unrouted = 0

    # ------------------------------------------------------------ assembly

    def add_part(
        self,
        name: str,
        part: Part,
        *,
        messages: Iterable[type] = (),
        commands: Iterable[type] = (),
    ) -> None:
        if name in self.parts:
            raise LocalProtocolError(f"part {name!r} added twice")
        self.parts[name] = part
        quick = getattr(part, "quick_tick", None)
        if quick is not None:
            self._quick[name] = quick
            named = getattr(part, "QUICK_TIMERS", None)
            if named is None:
                self.quick_timers = None
            elif self.quick_timers is not None:
                self.quick_timers.update((name, t) for t in named)
        for t in messages:
            self._register(self._msg_route, t, name, "message")
        for t in commands:
            self._register(self._cmd_route, t, name, "command")

    @staticmethod
    def _register(table: dict[type, str], t: type, name: str, what: str) -> None:
        if t in table:
            raise LocalProtocolError(f"{what} type {t.__name__} routed to two parts")
        table[t] = name

    def wire(self, event_type: type, fn: Wiring) -> None:
        """On `event_type` from any part, feed `fn(event)`'s (part, command) pairs."""
        self._wiring.setdefault(event_type, []).append(fn)

    def part_for_message(self, msg: Any) -> str | None:
        return self._msg_route.get(type(msg))

    # ------------------------------------------------------------ core contract

    def handle(self, inp: Any, now: float) -> list[Effect]:
        out: list[Effect] = []
        # Exact type test first (most inputs of a simulation are timers), then the
        # isinstance chain as before (subclasses included).
        t = type(inp)
        if t is TimerFired or (t is not Received and isinstance(inp, TimerFired)):
            timer = inp.timer
            if not (isinstance(timer, tuple) and len(timer) == 2 and timer[0] in self.parts):
                self.unrouted += 1
                return out
            self._run(timer[0], TimerFired(timer[1]), now, out, 0)
        elif isinstance(inp, Received):
            name = self._msg_route.get(type(inp.msg))
            if name is None:
                self.unrouted += 1
                return out
            self._run(name, inp, now, out, 0)
        elif isinstance(inp, PeerUnreachable):
            for name in self.parts:
                self._run(name, inp, now, out, 0)
        else:
            name = self._cmd_route.get(type(inp))
            if name is None:
                raise LocalProtocolError(f"no part takes command {type(inp).__name__}")
            self._run(name, inp, now, out, 0)
        return out

    def quick_tick(self, timer: Any, now: float) -> float | None:
        """If firing `timer` now would only re-arm it (at the deadline returned), say
        so without running it; None: hand `TimerFired(timer)` to `handle` as usual.
        Asks the owning part's `quick_tick`, if it has one (the gossip core's idle
        tick); a driver may use this to skip building inputs and effects."""
        if not (isinstance(timer, tuple) and len(timer) == 2):
            return None
        quick = self._quick.get(timer[0])
        return None if quick is None else quick(timer[1], now)

    def quick_owner(self, timer: Any) -> tuple[Callable[[Any, float], float | None], Any] | None:
        """The owning part's `quick_tick` and the part's own timer id, so that a driver
        asking the same question again and again (the simulator's parked ticks) can
        ask the part directly: `fn(inner, now)` answers as `quick_tick(timer, now)`."""
        if not (isinstance(timer, tuple) and len(timer) == 2):
            return None
        quick = self._quick.get(timer[0])
        return None if quick is None else (quick, timer[1])

    def _run(self, name: str, inp: Any, now: float, out: list[Effect], depth: int) -> None:
        self.wrap(name, self.parts[name].handle(inp, now), now, out, depth)

    def wrap(self, name: str, effects: list[Effect], now: float, out: list[Effect],
             depth: int = 0) -> None:
        """Append part `name`'s `effects` to `out` as `handle` gives them: its timers
        named `(name, timer)`, its events' wiring run. A driver that hands an input
        to the part itself (the simulator: `parts[name].handle`, routed as `handle`
        routes it) calls this for any effect it does not name the timers of itself."""
        # Sends first (the most frequent effect; the effect types are disjoint, so the
        # order of the tests changes nothing else). Exact type tests for the effects
        # every core builds, the isinstance chain after them for any subclass.
        append = out.append
        for eff in effects:
            t = type(eff)
            if t is Send:
                append(eff)
            elif t is SetTimer:
                append(SetTimer((name, eff.timer), eff.at))  # type: ignore[union-attr]
            elif t is CancelTimer:
                append(CancelTimer((name, eff.timer)))  # type: ignore[union-attr]
            elif isinstance(eff, Send):
                append(eff)
            elif isinstance(eff, SetTimer):
                append(SetTimer((name, eff.timer), eff.at))
            elif isinstance(eff, CancelTimer):
                append(CancelTimer((name, eff.timer)))
            elif isinstance(eff, Emit):
                append(eff)
                self._cascade(eff.event, now, out, depth)
            else:
                append(eff)

    def _cascade(self, event: Any, now: float, out: list[Effect], depth: int) -> None:
        fns = self._wiring.get(type(event))
        if not fns:
            return
        if depth >= MAX_CASCADE:
            raise LocalProtocolError(f"event wiring deeper than {MAX_CASCADE} at {event!r}")
        for fn in fns:
            for target, command in fn(event):
                self._run(target, command, now, out, depth + 1)


# ---------------------------------------------------------------- composition

#: Gossip events after which the capsule core is given the whole live set again.
_MEMBERSHIP_EVENTS: tuple[type, ...] = (
    MemberJoined, MemberUpdated, MemberFailed, MemberLeft, MemberReaped, MemberExpelled,
    MemberLeftCell,
)


@dataclass(frozen=True, slots=True)
class GossipSetup:
    """What the gossip core is built from. `admission`/`chain`: colony mode."""

    config: SwimConfig
    ad: ResourceAd | None = None
    addrs: tuple[str, ...] = ()
    verifier: Verifier | None = None
    admission: Admission | None = None
    chain: tuple[Envelope, ...] = ()


@dataclass(frozen=True, slots=True)
class CellSetup:
    """Tier-1 cells (gossip/cells.py): SWIM runs inside a cell of `site`; the cell to
    start in arrives later as the `StartCells` command (the driver picks it)."""

    config: CellConfig
    site: str = ""


@dataclass(frozen=True, slots=True)
class DhtSetup:
    """What the DHT core is built from; `addrs` in binary multiaddr form (kad wire)."""

    config: KadConfig
    addrs: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeParts:
    """A built node and its cores (None: not part of this node)."""

    node: Node
    swim: Swim | None
    kad: Kademlia | None
    exchange: Exchange | None
    capsule: CapsulePart | None
    #: The gossip part when it runs in cells (`swim` is its SWIM core).
    cell_node: CellNode | None = None


def build_node(
    keypair: KeyPair,
    rng: random.Random,
    *,
    gossip: GossipSetup | None = None,
    dht: DhtSetup | None = None,
    blocks: BlockSource | None = None,
    capsule: CapsuleCore | None = None,
    dht_from_gossip: bool = True,
    cells: CellSetup | None = None,
) -> NodeParts:
    """Compose the cores named into one `Node` (see the module docstring).

    `blocks` adds the Bitswap exchange, serving from that source; `capsule` needs gossip
    (its members come from gossip's live set). With `dht_from_gossip`, a member gossip
    vouches for (signed alive claim) is offered to the DHT as a contact worth probing.
    With `cells`, the gossip part is a `CellNode` (SWIM inside a cell); its cell core's
    rng is drawn last, so a node without cells draws exactly as before.
    """
    me = keypair.peer_id
    node = Node(me)
    swim = kad = exchange = part = cell_node = None
    if cells is not None and gossip is None:
        raise LocalProtocolError("cells need gossip (a cell is a SWIM pool)")
    if gossip is not None:
        swim = Swim(
            keypair, gossip.config, rng=random.Random(rng.getrandbits(64)),
            ad=gossip.ad, addrs=gossip.addrs, verifier=gossip.verifier,
            admission=gossip.admission, chain=gossip.chain,
        )
        if cells is None:
            node.add_part("gossip", swim, messages=GOSSIP_MESSAGES, commands=GOSSIP_COMMANDS)
        else:  # the cell core's rng comes after every other draw (see the docstring)
            cell_node = CellNode(swim, CellCore(me, cells.config, random.Random(),
                                                site=cells.site))
            node.add_part("gossip", cell_node, messages=GOSSIP_MESSAGES,
                          commands=(*GOSSIP_COMMANDS, StartCells, SiblingSize))
    if dht is not None:
        kad = Kademlia(me, dht.config, rng=random.Random(rng.getrandbits(64)), addrs=dht.addrs)
        node.add_part("dht", kad, messages=(DhtRequest, DhtResponse), commands=DHT_COMMANDS)
    if blocks is not None:
        exchange = Exchange(me, blocks)
        node.add_part("exchange", exchange, messages=(BitswapMessage,),
                      commands=(Fetch, AddProviders, CancelFetch))  # fmt: skip
    if swim is not None and kad is not None and dht_from_gossip:
        node.wire(MemberJoined, lambda ev: [("dht", AddPeer(ev.peer))])
    if capsule is not None:
        if swim is None:
            raise LocalProtocolError("a capsule part needs gossip (its members come from it)")
        gossip_core = swim
        part = CapsulePart(capsule, lambda: members_changed(gossip_core))
        node.add_part("capsule", part, messages=CAPSULE_MESSAGES, commands=CapsulePart.COMMANDS)
        # The capsule core takes the whole live set (with ads) on every change.
        for ev_type in _MEMBERSHIP_EVENTS:
            node.wire(ev_type, lambda ev: [("capsule", members_changed(gossip_core))])
    if cell_node is not None:
        cell_node.cells.rng.seed(rng.getrandbits(64))
    return NodeParts(node, swim, kad, exchange, part, cell_node)
