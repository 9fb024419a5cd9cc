"""Public types of the transport adapter: codecs, errors, events, config, stats.

Re-exported by overlay.runtime.net.transport (import them from there). No I/O and no
libp2p import here: the daemon, the CLI and tests can use these types without
loading either network stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from overlay.core.errors import ColonyError, ConfigError, LocalProtocolError, WireError
from overlay.core.ids import PeerId
from overlay.core.wire import DEFAULT_MAX_FRAME_BYTES
from overlay.p2p import multiaddr, noise_cipher

#: The network stacks `[network] stack` may name.
STACK_NATIVE = "native"
STACK_PYLIBP2P = "py-libp2p"
STACKS = (STACK_NATIVE, STACK_PYLIBP2P)


class Codec(Enum):
    CBOR = "cbor"  # Colony protocols: envelope + canonical CBOR, request ids
    RAW = "raw"  # libp2p protobuf protocols: opaque bodies, responses in order


class TransportError(ColonyError):
    """Base of the adapter's errors; the daemon catches this one class."""


class ListenError(TransportError):
    """A configured listen address could not be bound."""


class DialError(TransportError):
    """No connection to the peer could be made (no address, refused, timeout)."""


class SendError(TransportError):
    """A frame could not be delivered to the peer's stream."""


class RequestTimeout(TransportError):
    """No response arrived in time."""


class RemoteError(TransportError):
    """The peer answered a request with a refusal (its reason is the message)."""


class AttachError(TransportError):
    """Securing/multiplexing a foreign byte stream failed (handshake, wrong peer)."""


@dataclass(frozen=True, slots=True)
class PeerConnected:
    peer: PeerId


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    peer: PeerId


@dataclass(frozen=True, slots=True)
class SendFailed:
    """Frames posted to `peer` were dropped (dial or stream failure)."""

    peer: PeerId
    protocol: str
    reason: str
    frames_dropped: int


TransportEvent = PeerConnected | PeerDisconnected | SendFailed

#: Handlers get the frame as the peer sent it, decoded by the protocol's codec (CBOR
#: values; bytes for RAW) but not validated: `object`, which each handler narrows.
OnMessage = Callable[[PeerId, object], None]
OnRequest = Callable[[PeerId, object], Awaitable[object]]
#: Waits until a one-way frame of this many bytes may be delivered (back-pressure).
Admit = Callable[[int], Awaitable[None]]
#: Smaller frames are delivered without asking `Admit` (wants, presences: no blocks).
ADMIT_MIN_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What identify told us about a peer."""

    peer: PeerId
    protocols: tuple[str, ...]
    agent_version: str | None
    addrs: tuple[str, ...]
    #: The address the peer sees us at (identify's observedAddr); None if not sent.
    observed_addr: str | None = None


@dataclass(frozen=True, slots=True)
class TransportConfig:
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: "native" (overlay/p2p: our own multistream/Noise/Yamux) or "py-libp2p".
    stack: str = STACK_NATIVE
    #: Bytes per second we send to one peer (token bucket); 0 = unlimited.
    max_send_rate: int = 0
    #: `[network] noise_cipher`: "auto" (AES-GCM first between colony peers where the
    #: CPU has AES instructions), "aesgcm" or "chacha" (`/noise` only); native stack.
    noise_cipher: str = "auto"
    #: Frames waiting per outbound (peer, protocol) stream.
    queue_frames: int = 256
    #: Bytes that `post` may leave queued for one peer across its protocols.
    queue_bytes_per_peer: int = 16 * 1024 * 1024
    dial_timeout_s: float = 10.0
    stream_open_timeout_s: float = 10.0
    send_timeout_s: float = 30.0
    request_timeout_s: float = 30.0
    #: Requests served at once per inbound stream; the reader waits beyond this.
    max_inflight_requests_per_stream: int = 64
    #: Concurrent inbound streams per (peer, protocol); more are reset.
    max_inbound_streams_per_peer_protocol: int = 4
    dial_backoff_s: float = 1.0
    dial_backoff_max_s: float = 30.0
    max_addrs_per_peer: int = 16
    max_known_peers: int = 100_000
    #: Seconds a hearsay address (a DHT answer's, a provider record's) is kept after it
    #: was last heard, or after the peer's last connection ended (addr_book.py;
    #: go-libp2p's ProviderAddrTTL).
    hearsay_addr_ttl_s: float = 30 * 60.0
    event_queue: int = 4096
    #: `[quic] pmtud`: QUIC path MTU discovery (else 1200-byte datagrams throughout).
    quic_pmtud: bool = True
    #: `[quic] max_datagram_bytes`: the ceiling of the search.
    quic_max_datagram_bytes: int = 65527

    def __post_init__(self) -> None:
        if self.stack not in STACKS:
            raise ConfigError(f"[network] stack {self.stack!r} is not one of {STACKS}")
        if self.noise_cipher not in noise_cipher.SETTINGS:
            raise ConfigError(f"[network] noise_cipher {self.noise_cipher!r} is not one of "
                              f"{noise_cipher.SETTINGS}")
        if self.hearsay_addr_ttl_s <= 0:
            raise ConfigError("hearsay_addr_ttl_s must be positive")
        if self.max_send_rate < 0:
            raise ConfigError("[network] max_send_rate must be >= 0 (0 = unlimited)")
        if not 1200 <= self.quic_max_datagram_bytes <= 65527:
            raise ConfigError(f"[quic] max_datagram_bytes {self.quic_max_datagram_bytes} "
                              "is not within 1200..65527")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Mapping[str, Any]], **overrides: Any) -> TransportConfig:
        """From the node configuration (`[network] max_frame_bytes, stack, max_send_rate,
        noise_cipher`, `[quic] pmtud, max_datagram_bytes`)."""
        net = cfg["network"]
        values: dict[str, Any] = {"max_frame_bytes": int(net["max_frame_bytes"])}
        if "stack" in net:
            values["stack"] = str(net["stack"])
        if "max_send_rate" in net:
            values["max_send_rate"] = int(net["max_send_rate"])
        if "noise_cipher" in net:
            values["noise_cipher"] = str(net["noise_cipher"])
        quic = cfg.get("quic", {})
        if "pmtud" in quic:
            values["quic_pmtud"] = bool(quic["pmtud"])
        if "max_datagram_bytes" in quic:
            values["quic_max_datagram_bytes"] = int(quic["max_datagram_bytes"])
        values.update(overrides)
        return cls(**values)


@dataclass
class TransportStats:
    """Plain counters; overlay.runtime.api.metrics exports them at scrape time."""

    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    streams_opened: int = 0
    streams_accepted: int = 0
    dials: int = 0
    dial_failures: int = 0
    requests_sent: int = 0
    requests_served: int = 0
    request_timeouts: int = 0
    frames_dropped_queue_full: int = 0
    frames_dropped_send_failed: int = 0
    #: Frames dropped by `post` (queue full), by protocol.
    queue_full_by_protocol: dict[str, int] = field(default_factory=dict)
    unmatched_responses: int = 0
    handler_errors: int = 0
    events_dropped: int = 0
    #: Seconds writers waited on the send-rate limit (`max_send_rate`).
    rate_limited_s: float = 0.0
    #: Streams closed by us because of the peer or a handler, by reason.
    streams_dropped: dict[str, int] = field(default_factory=dict)
    #: Addresses `add_addrs` skipped: not a multiaddr, or naming another peer.
    addrs_refused: int = 0


def split_p2p_addr(addr: str) -> tuple[PeerId, str]:
    """`/ip4/…/tcp/N/p2p/12D3…` → (peer id, `/ip4/…/tcp/N`)."""
    try:
        peer, base = multiaddr.split_p2p(addr)
        if peer is not None:
            multiaddr.to_bytes(base)
    except WireError as e:
        raise LocalProtocolError(f"not a multiaddr: {addr!r} ({e})") from None
    if peer is None:
        raise LocalProtocolError(f"multiaddr {addr!r} has no /p2p/<peer id> part")
    return peer, base
