"""The narrow interfaces a daemon service may use — and nothing else of the daemon.

A service (capsules, trust, fetch, reachability, the dialer, the API routes) is built
by `daemon.py` from the handful of these it needs, never from the daemon itself. Each
interface is a `Protocol`, so the concrete object behind it (the driver, the transport,
gossip's member table, …) stays where it is, and a test hands a service a small real
object (or a core pair from tests/helpers) instead of a fake daemon.

| interface  | what a service may do                              | provided by            |
|------------|----------------------------------------------------|------------------------|
| Cores      | submit inputs to the composed sans-IO node; `now`  | runtime/driver.Driver  |
| Network    | post / request / handlers / addresses / peers      | runtime/net/transport  |
| Membership | read the gossip view (members, own ad, is_member)  | services/membership    |
| DhtCalls   | run one DHT command and await its result event     | services/dht_client    |
| Blocks     | the block store, fetch a DAG, walk a DAG           | services/blocks        |
| EventBus   | subscribe to the node's events, watch, recent      | services/events        |
| Spawn      | start a background task in the daemon's nursery    | the daemon's nursery   |

Connectivity reaches sans-IO parts as inputs (`Received`, `PeerUnreachable`, …)
submitted through `Cores`, never as callbacks patched onto a part.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, overload

if TYPE_CHECKING:
    import trio

    from dht.api import FindNode, GetProviders, GetValue, LookupDone, Provide, ProvideDone, PutValue
    from gossip.members import MemberInfo
    from gossip.resources import ResourceAd
    from gossip.topic_pubsub import TopicMessage
    from overlay.core.cid import Cid
    from overlay.core.effects import Effect
    from overlay.core.ids import PeerId
    from overlay.runtime.net.transport_types import Codec
    from store.blockstore import BlockStore

#: A handler of one-way frames on a protocol: (peer, decoded frame) → None. The frame is
#: what the peer sent, decoded by the protocol's codec (CBOR values, or bytes for raw
#: protocols) and not yet validated: `object`, so each handler must narrow it.
MessageHandler = Callable[["PeerId", object], None]
#: A handler of requests on a protocol: (peer, decoded request) → reply (None: no
#: reply); the reply must be encodable by the protocol's codec.
RequestHandler = Callable[["PeerId", object], Awaitable[object]]


class Cores(Protocol):
    """The composed sans-IO node, run by the driver on the real clock."""

    def now(self) -> float: ...

    def submit(self, inp: object) -> bool:
        """Queue an input; False when the bounded queue is full (counted by the driver)."""
        ...

    async def submit_wait(self, inp: object) -> None:
        """Queue an input, waiting for room."""
        ...

    def handle_now(self, inp: object) -> list[Effect]:
        """Run an input at once, on the caller's task (no checkpoint in between)."""
        ...


class Network(Protocol):
    """What a service may do with the transport."""

    @property
    def addrs(self) -> list[str]: ...

    def post(self, peer: PeerId, protocol: str, obj: object) -> bool: ...

    async def request(
        self, peer: PeerId, protocol: str, obj: object, timeout: float = ...
    ) -> object:
        """Send a request and return the peer's decoded (unvalidated) reply."""
        ...

    def set_handler(
        self,
        protocol: str,
        *,
        on_message: MessageHandler | None = None,
        on_request: RequestHandler | None = None,
        codec: Codec = ...,
    ) -> None: ...

    def add_addrs(self, peer: PeerId, addrs: Iterable[str], *, hearsay: bool = False
                  ) -> None: ...

    def known_addrs(self, peer: PeerId) -> list[str]: ...

    async def connect(self, addr_or_peer: str | PeerId) -> PeerId: ...

    def connected_peers(self) -> list[PeerId]: ...

    def is_connected(self, peer: PeerId) -> bool: ...


class Membership(Protocol):
    """A read-only view of gossip membership."""

    def list_members(self, *, include_gone: bool = False) -> list[MemberInfo]: ...

    def member(self, peer: PeerId) -> MemberInfo | None: ...

    def own_ad(self) -> ResourceAd | None:
        """This node's current signed resource ad (None before the first)."""
        ...

    def is_member(self, peer: PeerId) -> bool:
        """True when `peer` is a live (alive or suspect) member."""
        ...


class DhtCalls(Protocol):
    """Run a DHT command and await the event that completes it."""

    @overload
    async def call(self, make: Callable[[int], Provide], timeout_s: float = ...
                   ) -> ProvideDone: ...

    @overload
    async def call(self, make: Callable[[int], FindNode | GetProviders | GetValue | PutValue],
                   timeout_s: float = ...) -> LookupDone: ...

    async def call(self, make: Callable[[int], object], timeout_s: float = 60.0
                   ) -> LookupDone | ProvideDone:
        """`make(request_id)` builds the command; returns its result event (a Provide
        ends with `ProvideDone`, every other command with `LookupDone`).

        Raises ColonyError when it does not complete within `timeout_s`."""
        ...


class Blocks(Protocol):
    """The block store and the one way to fetch a DAG from the network."""

    @property
    def store(self) -> BlockStore: ...

    async def fetch_dag(
        self,
        root: Cid,
        providers: Sequence[PeerId] = (),
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Fetch every missing block of `root`'s DAG (from `providers`, or the ones the
        DHT names, else connected peers); committed when it returns. ColonyError when
        there is no one to ask, a block is unavailable or no block came for the stall
        limit (what arrived stays stored: fetching again resumes). `progress(blocks
        fetched, blocks outstanding)` is called as the fetch goes."""
        ...

    def dag_multihashes(self, root: Cid, *, inner_only: bool = False) -> list[bytes]:
        """Multihashes of every block of a locally complete DAG (for providing); with
        `inner_only`, of the root and the blocks that link to others."""
        ...


class EventBus(Protocol):
    """The node's events (from the cores' `Emit` effects), fanned out."""

    def subscribe(self, handler: Callable[[object], None]) -> None:
        """Call `handler(event)` for every event, in order, on the driver's task."""
        ...

    def watch(self, max_buffer: int = ...) -> trio.MemoryReceiveChannel[tuple[float, object]]:
        """A channel of (time, event); a slow watcher misses events, never stalls us."""
        ...

    def recent(self) -> list[tuple[float, object]]:
        """The bounded log of recent (time, event) pairs, oldest first."""
        ...


#: Start a background task in the daemon's nursery (`nursery.start_soon`).
Spawn = Callable[..., None]


class TopicFeed(Protocol):
    """A topic's messages while the caller holds the subscription (services/topics.py);
    for triggers and handlers, which follow topics but need nothing else of them."""

    def subscription(
        self, name: str
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[TopicMessage]]: ...
