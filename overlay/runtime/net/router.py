"""The router between the transport and the cores: decode in, route out.

Inbound, per protocol: a gossip frame is decoded and submitted to the cores as
`Received`; a Bitswap frame is decoded and passed through the trust filter (colony
mode: members-only data) first; a kad request is served by the DHT client, which
waits for the core's answer. A frame that does not decode is the peer's fault
(`RemoteProtocolError`: the transport closes that stream, never the node).

Outbound (`send`, the driver's send effect): each core message goes to the protocol
that carries it, by type — gossip and Bitswap are posted, kad messages go to the DHT
client (requests need a reply), other kinds to the routes given (capsules). A
message no route takes is a bug, logged.

Transport events become core inputs: a peer disconnected or a failed send is
`PeerUnreachable`; a failed dial asks the dialer for another path (WebRTC, relay).
`Disconnected` (the last connection closed) and `PeerUnreachable` (a send failed) also
go to the `listeners`: cores run by drivers of their own (the topics overlay,
services/topics.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol, cast

import structlog

from dht.wire import DhtRequest, DhtResponse
from gossip.messages import MESSAGE_TYPES as GOSSIP_MESSAGES
from gossip.messages import decode_message as decode_gossip
from overlay.core.effects import Connected, Disconnected, PeerUnreachable, Received
from overlay.core.errors import RemoteProtocolError, WireError
from overlay.exchange.messages import BitswapMessage
from overlay.runtime.net.transport_types import (
    Admit,
    Codec,
    PeerConnected,
    PeerDisconnected,
    SendFailed,
)

if TYPE_CHECKING:
    from gossip.messages import Message as GossipMessage
    from overlay.core.ids import PeerId
    from overlay.runtime.net.transport import Transport

log = structlog.get_logger("colony.daemon")

#: The trust filter of inbound Bitswap: the message to keep, or None to drop it.
BitswapFilter = Callable[["PeerId", BitswapMessage], "BitswapMessage | None"]
#: (message types, send) for core messages carried by another service's protocol.
Route = tuple[tuple[type, ...], Callable[["PeerId", object], None]]
#: Queue an input for the cores without waiting (the driver's `submit`).
Submit = Callable[[object], bool]


class KadEndpoint(Protocol):
    """The DHT client's side of the kad protocol (services/dht_client.py)."""

    protocol: str

    def serve(self, peer: PeerId, raw: object) -> Awaitable[bytes | None]: ...

    def answer(self, resp: DhtResponse) -> None: ...

    def send(self, peer: PeerId, req: DhtRequest) -> None: ...


class DialHooks(Protocol):
    """What the router tells the dialer (edge/dialer.py)."""

    def ensure_soon(self, peer: PeerId) -> None: ...

    def forget(self, peer: PeerId) -> None: ...


class Router:
    def __init__(
        self, transport: Transport, submit: Submit, kad: KadEndpoint, *,
        gossip_protocol: str, bitswap_protocol: str, kad_server: bool,
        bitswap_filter: BitswapFilter, routes: Sequence[Route] = (),
        listeners: Sequence[Submit] = (), bitswap_admit: Admit | None = None,
    ) -> None:
        self._t = transport
        self._submit = submit
        self._kad = kad
        self._gossip = gossip_protocol
        self._bitswap = bitswap_protocol
        self._kad_server = kad_server
        self._filter = bitswap_filter
        #: Awaited before a Bitswap message carrying blocks is taken (the block
        #: writer's room): the peer's stream waits, not our event loop.
        self._bitswap_admit = bitswap_admit
        self._routes = tuple(routes)
        self._listeners = tuple(listeners)
        #: Inbound Bitswap messages the trust filter dropped whole (non-members).
        self.bitswap_filtered = 0
        #: Outbound messages of no known protocol (a bug: logged at error).
        self.unroutable = 0

    def register(self) -> None:
        t = self._t
        t.set_handler(self._gossip, on_message=self._on_gossip, codec=Codec.CBOR)
        t.set_handler(self._bitswap, on_message=self._on_bitswap, codec=Codec.RAW,
                      admit=self._bitswap_admit)
        if self._kad_server:
            t.set_handler(self._kad.protocol, on_request=self._kad.serve, codec=Codec.RAW)
        else:  # a DHT client only dials kad: it answers no kad requests (docs/dht.md)
            t.codec_for(self._kad.protocol, Codec.RAW)

    # ------------------------------------------------------------ inbound

    def _on_gossip(self, peer: PeerId, obj: object) -> None:
        try:
            msg = decode_gossip(obj)
        except WireError as e:
            raise RemoteProtocolError(f"bad gossip message: {e}") from None
        self._submit(Received(peer, msg))

    def _on_bitswap(self, peer: PeerId, raw: object) -> None:
        if not isinstance(raw, (bytes, bytearray, memoryview)):  # RAW: a bytes-like body
            raise RemoteProtocolError(f"bad bitswap frame: {type(raw).__name__}")
        try:
            msg = BitswapMessage.from_bytes(bytes(raw))
        except WireError as e:
            raise RemoteProtocolError(f"bad bitswap message: {e}") from None
        kept = self._filter(peer, msg)  # colony mode: members-only data
        if kept is None:
            self.bitswap_filtered += 1
            return  # logged by the trust service
        self._submit(Received(peer, kept))

    async def watch_transport(self, dialer: DialHooks) -> None:
        async for ev in self._t.events:
            # Connectivity reaches the cores as inputs (the capsule part hides peers
            # whose connections all closed); a peer re-connected at once stays shown.
            if isinstance(ev, PeerConnected):
                self._submit(Connected(ev.peer))
            elif isinstance(ev, PeerDisconnected) and not self._t.is_connected(ev.peer):
                self._submit(Disconnected(ev.peer))
                for listener in self._listeners:
                    listener(Disconnected(ev.peer))
            if isinstance(ev, (PeerDisconnected, SendFailed)):
                self._submit(PeerUnreachable(ev.peer))
            if isinstance(ev, SendFailed):  # a listener hears of a closed one as above
                for listener in self._listeners:
                    listener(PeerUnreachable(ev.peer))
            # A peer we cannot dial may be NAT'd: try WebRTC, then a relay, in the
            # background; the next frames then use that connection.
            if isinstance(ev, SendFailed) and ev.reason.startswith("dial_failed"):
                dialer.ensure_soon(ev.peer)
            elif isinstance(ev, PeerDisconnected):
                dialer.forget(ev.peer)

    # ------------------------------------------------------------ outbound

    def send(self, peer: PeerId, msg: object) -> None:
        if isinstance(msg, GOSSIP_MESSAGES):
            self._t.post(peer, self._gossip, cast("GossipMessage", msg).to_wire())
        elif isinstance(msg, BitswapMessage):
            self._t.post(peer, self._bitswap, msg.to_bytes())
        elif isinstance(msg, DhtResponse):
            self._kad.answer(msg)
        elif isinstance(msg, DhtRequest):
            self._kad.send(peer, msg)
        else:
            for types, route in self._routes:
                if isinstance(msg, types):
                    route(peer, msg)
                    return
            self.unroutable += 1
            log.error("unroutable_message", type=type(msg).__name__)
