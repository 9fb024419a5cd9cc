"""The DHT client: the trio side of the Kademlia core (context.DhtCalls).

Three paths, all carrying the core's own messages (dht/wire.py) and no protocol
logic (the core decides what to send and when a lookup ends):

- commands: `call(make)` gives a command a fresh request id, submits it and waits for
  the `LookupDone` / `ProvideDone` event with that id (`on_event`); `providers(key)`
  runs a GetProviders whose providers arrive in a `ProviderFeed` as the core reports
  them (`ProvidersFound`, kubo's FindProvidersAsync), late answers included;
- inbound kad requests (`serve`, a request handler on the kad protocol): the request
  goes to the core under a fresh id, and its `DhtResponse` (routed back to `answer`)
  becomes the reply, or no reply after `KAD_SERVE_TIMEOUT_S`; ADD_PROVIDER has no
  answer in the kad-dht spec;
- outbound kad requests (`send`): ADD_PROVIDER is posted, every other request runs as
  a background request whose reply (or failure: `PeerUnreachable`) goes back to the core.
  A fetch announces every block it got, so ADD_PROVIDERs to one peer can overflow its
  send queue: one dropped there is posted again after `REPOST_DELAYS_S` (at most
  `MAX_REPOSTING` at a time); one still dropped is counted in `announces_lost` (the
  next reprovide repairs it).

Addresses (services/dht_addrs.py): an answer we send names each closer or provider
peer with the addresses our address book holds for it (the core's table keeps none),
scoped to the requester; an answer we receive keeps only addresses we may dial, at
most a few a peer, before the core sees it. A requester we know no address for is
asked for its own (identify) in the background, so later answers can name it: at
most `MAX_IDENTIFYING` at a time, each peer at most once per `IDENTIFY_RETRY_S`
(`MAX_IDENTIFY_TRACKED` peers remembered).

One counter numbers both command and inbound ids, so they never collide in the core.
Bounds: waiters and feeds exist only while their caller waits (`timeout_s`,
`KAD_SERVE_TIMEOUT_S`, the `providers` context) and are removed when it stops, answered
or not; a feed holds at most the command's count of providers (the core's bound).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Generic, TypeVar, overload

import structlog
import trio

from dht.api import (
    FindNode,
    GetProviders,
    GetValue,
    LookupDone,
    ModeChanged,
    Provide,
    ProvideDone,
    ProvidersFound,
    PutValue,
    RequestFailed,
)
from dht.wire import DhtRequest, DhtResponse, KadMessage, MessageType, PeerInfo
from overlay.core.effects import Received
from overlay.core.errors import ColonyError, RemoteProtocolError, WireError
from overlay.runtime.net.transport import TransportError
from overlay.runtime.services.dht_addrs import AddrStats, attach, clean, own_addrs, peer_scope

if TYPE_CHECKING:
    from overlay.core.ids import PeerId
    from overlay.runtime.context import Cores, Network, Spawn
    from overlay.runtime.net.transport_types import PeerInfo as IdentifyInfo

log = structlog.get_logger("colony.daemon")
T = TypeVar("T")

#: An inbound kad request the core has not answered by then gets no reply.
KAD_SERVE_TIMEOUT_S = 10.0
#: Waits before posting a dropped ADD_PROVIDER again (its queue was full).
REPOST_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: ADD_PROVIDERs waiting to be posted again at most (more are counted as lost).
MAX_REPOSTING = 4096
#: Identify of requesters we know no address for: at once, per peer, remembered, limit.
MAX_IDENTIFYING = 8
IDENTIFY_RETRY_S = 600.0
MAX_IDENTIFY_TRACKED = 4096
IDENTIFY_TIMEOUT_S = 5.0


class _Waiter(Generic[T]):
    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: T | None = None


class ProviderFeed:
    """The providers of one GetProviders command, in the order the core found them.

    `walked` once the lookup's walk ended (its `LookupDone`: what a one-shot lookup
    would have returned is in `found` by then); `ended` once nothing more can come
    (the core's last `ProvidersFound`). `changed` is replaced after every update."""

    __slots__ = ("changed", "ended", "found", "walked")

    def __init__(self) -> None:
        self.found: list[PeerInfo] = []
        self.walked = False
        self.ended = False
        self.changed = trio.Event()

    def update(self, providers: tuple[PeerInfo, ...] = (), *, walked: bool = False,
                ended: bool = False) -> None:
        known = {i.peer for i in self.found}
        self.found += [i for i in providers if i.peer not in known]
        self.walked |= walked or ended
        self.ended |= ended
        ev, self.changed = self.changed, trio.Event()
        ev.set()

    async def wait_walked(self) -> None:
        while not self.walked:
            await self.changed.wait()

    async def wait_more(self, have: int) -> bool:
        """Wait until more than `have` providers are known (True) or none can come."""
        while len(self.found) <= have and not self.ended:
            await self.changed.wait()
        return len(self.found) > have


class DhtClient:
    def __init__(
        self, cores: Cores, network: Network, spawn: Spawn, *, protocol: str,
        rpc_timeout_s: float, serving: bool = True,
        remote_ip: Callable[[PeerId], str | None] | None = None,
        identify: Callable[[PeerId, float], Awaitable[IdentifyInfo]] | None = None,
    ) -> None:
        self._cores = cores
        self._net = network
        self._spawn = spawn
        self.protocol = protocol
        self._rpc_timeout_s = rpc_timeout_s
        self._ids = itertools.count(1)
        self._waiters: dict[int, _Waiter[LookupDone | ProvideDone]] = {}
        self._feeds: dict[int, ProviderFeed] = {}
        self._inbound: dict[int, _Waiter[KadMessage]] = {}
        self._reposting = 0
        #: ADD_PROVIDERs dropped (queue full) and still dropped after every repost.
        self.announces_lost = 0
        #: Whether the core serves kad requests (mode "auto" follows reachability:
        #: `ModeChanged`), and the inbound requests refused while it did not.
        self.serving = serving
        self.refused_client = 0
        #: Where a peer's end of our TCP or QUIC connection is (Transport.remote_ip):
        #: the scope of the addresses we give it and take from it. Unknown: public.
        self._remote_ip = remote_ip or (lambda peer: None)
        self.addr_stats = AddrStats()
        #: Transport.identify, to learn an address-less requester's own addresses; the
        #: peers asked (→ when, oldest first) and how many asks are running.
        self._identify = identify
        self._asked: dict[PeerId, float] = {}
        self._identifying = 0

    @property
    def pending(self) -> int:
        """Commands and inbound requests waiting for the core."""
        return len(self._waiters) + len(self._inbound)

    # ------------------------------------------------------------ commands

    @overload
    async def call(self, make: Callable[[int], Provide], timeout_s: float = ...
                   ) -> ProvideDone: ...

    @overload
    async def call(self, make: Callable[[int], FindNode | GetProviders | GetValue | PutValue],
                   timeout_s: float = ...) -> LookupDone: ...

    async def call(self, make: Callable[[int], object], timeout_s: float = 60.0
                   ) -> LookupDone | ProvideDone:
        """Run a DHT command built with a fresh request id; return its result event."""
        rid = next(self._ids)
        w: _Waiter[LookupDone | ProvideDone] = _Waiter()
        self._waiters[rid] = w
        await self._cores.submit_wait(make(rid))
        try:
            with trio.fail_after(timeout_s):
                await w.event.wait()
        except trio.TooSlowError:
            raise ColonyError(f"DHT operation timed out after {timeout_s:.0f} s") from None
        finally:
            self._waiters.pop(rid, None)
        assert w.value is not None  # set before the event
        return w.value

    @asynccontextmanager
    async def providers(self, key: bytes, count: int = 0) -> AsyncIterator[ProviderFeed]:
        """Look up the providers of multihash `key`; they arrive in the feed yielded
        while the lookup runs and after its walk (late answers), until the context
        ends. Bounded in time by the core (its RPC timeouts)."""
        rid = next(self._ids)
        feed = ProviderFeed()
        self._feeds[rid] = feed
        try:
            await self._cores.submit_wait(GetProviders(rid, key, count))
            yield feed
        finally:
            self._feeds.pop(rid, None)

    def on_event(self, ev: object) -> None:
        if isinstance(ev, ProvidersFound):
            feed = self._feeds.get(ev.request_id)
            if feed is not None:
                feed.update(ev.providers, ended=ev.last)
            return
        if isinstance(ev, LookupDone) and ev.request_id in self._feeds:
            self._feeds[ev.request_id].update(walked=True)
            return
        if isinstance(ev, ModeChanged):
            self.serving = ev.server
            log.info("dht_mode_changed", mode="server" if ev.server else "client")
        elif isinstance(ev, (LookupDone, ProvideDone)):
            w = self._waiters.pop(ev.request_id, None)
            if w is not None:
                w.value = ev
                w.event.set()

    # ------------------------------------------------------------ inbound

    async def serve(self, peer: PeerId, raw: object) -> bytes | None:
        if not self.serving:
            # DHT mode "auto" behind a NAT: refuse at once, so the requester's RPC fails
            # now (and it drops us) instead of waiting for its timeout.
            self.refused_client += 1
            raise RemoteProtocolError("DHT client mode: this node serves no kad requests")
        if not isinstance(raw, (bytes, bytearray, memoryview)):  # RAW: a bytes-like body
            raise RemoteProtocolError(f"bad kad frame: {type(raw).__name__}")
        try:
            msg = KadMessage.from_wire(bytes(raw))
        except WireError as e:
            raise RemoteProtocolError(f"bad kad message: {e}") from None
        if self._identify is not None and not self._net.known_addrs(peer):
            self._ask_addrs_soon(peer)
        rid = next(self._ids)
        self._cores.submit(Received(peer, DhtRequest(rid, msg)))
        if msg.type == MessageType.ADD_PROVIDER:
            return None  # the kad-dht spec has no answer to ADD_PROVIDER
        w: _Waiter[KadMessage] = _Waiter()
        self._inbound[rid] = w
        try:
            with trio.move_on_after(KAD_SERVE_TIMEOUT_S):
                await w.event.wait()
        finally:
            self._inbound.pop(rid, None)
        reply = w.value
        if reply is None:
            return None
        # The core names closer peers without addresses (its table keeps none here):
        # give those our address book holds, as go-libp2p-kad-dht gives its peerstore's.
        reply = attach(reply, peer_scope(self._remote_ip(peer)),
                       lambda p: self._net.known_addrs(p), lambda p: self._net.is_connected(p),
                       self.addr_stats)
        return reply.to_wire()

    def _ask_addrs_soon(self, peer: PeerId) -> None:
        """Ask `peer` (a requester we know no address for) for its own addresses, so
        our answers stop naming it bare; bounded (module docstring)."""
        now = trio.current_time()
        last = self._asked.get(peer)
        if last is not None and now - last < IDENTIFY_RETRY_S:
            return
        if self._identifying >= MAX_IDENTIFYING:
            self.addr_stats.identify_skipped += 1
            return
        self._asked.pop(peer, None)
        self._asked[peer] = now
        while len(self._asked) > MAX_IDENTIFY_TRACKED:
            del self._asked[next(iter(self._asked))]
        self._identifying += 1
        self.addr_stats.identify_asked += 1
        self._spawn(self._ask_addrs, peer)

    async def _ask_addrs(self, peer: PeerId) -> None:
        assert self._identify is not None
        try:
            info = await self._identify(peer, IDENTIFY_TIMEOUT_S)
        except (ColonyError, trio.TooSlowError, trio.BrokenResourceError, OSError) as e:
            # A background ask: whatever the peer or the connection does costs this
            # ask only (an exception here would reach the daemon's nursery).
            self.addr_stats.identify_failed += 1
            log.debug("kad_requester_identify_failed", peer=str(peer), error=str(e))
            return
        finally:
            self._identifying -= 1
        addrs = own_addrs(info.addrs, peer_scope(self._remote_ip(peer)))
        if addrs:
            self._net.add_addrs(peer, addrs)
            self.addr_stats.identify_learned += 1

    def answer(self, resp: DhtResponse) -> None:
        """The core's answer to an inbound request `serve` is waiting on."""
        w = self._inbound.get(resp.rid)
        if w is not None:
            w.value = resp.msg
            w.event.set()

    # ------------------------------------------------------------ outbound

    def send(self, peer: PeerId, req: DhtRequest) -> None:
        if req.msg.type == MessageType.ADD_PROVIDER:
            wire = req.msg.to_wire()
            if not self._net.post(peer, self.protocol, wire):
                if self._reposting >= MAX_REPOSTING:
                    self.announces_lost += 1
                else:
                    self._reposting += 1
                    self._spawn(self._repost, peer, wire)
        else:
            self._spawn(self._request, peer, req)

    async def _repost(self, peer: PeerId, wire: bytes) -> None:
        """Post a dropped ADD_PROVIDER again once the peer's queue has drained."""
        try:
            for delay in REPOST_DELAYS_S:
                await trio.sleep(delay)
                if self._net.post(peer, self.protocol, wire):
                    return
            self.announces_lost += 1
        finally:
            self._reposting -= 1

    async def _request(self, peer: PeerId, req: DhtRequest) -> None:
        try:
            raw = await self._net.request(
                peer, self.protocol, req.msg.to_wire(), timeout=self._rpc_timeout_s
            )
            if not isinstance(raw, (bytes, bytearray, memoryview)):  # RAW: bytes-like
                raise WireError(f"kad reply is {type(raw).__name__}, not bytes")
            reply = KadMessage.from_wire(bytes(raw))
            # Before the core sees it: its PeerAddressesLearned reach the address book
            # ahead of the lookup's next queries, so these must be fit to dial.
            reply = clean(reply, peer_scope(self._remote_ip(peer)), self.addr_stats)
        except (TransportError, WireError) as e:
            # This RPC only: a refusal (a DHT client) or a bad reply says nothing about
            # the peer's other protocols. A lost connection reaches every core as
            # PeerUnreachable from the transport's own events (net/router.py).
            log.debug("kad_request_failed", peer=str(peer), error=str(e))
            self._cores.submit(RequestFailed(peer, req.rid))
            return
        self._cores.submit(Received(peer, DhtResponse(req.rid, reply)))
