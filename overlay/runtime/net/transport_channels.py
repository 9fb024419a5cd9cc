"""Internal bookkeeping of the transport adapter: queued frames, pending requests,
streams with their framing state, the outbound (peer, protocol) channels, and the
one place that writes to a stream (`FrameWriter`: write lock, send-rate limit,
byte and frame counters), shared by the sending and the receiving half.

Split out of overlay/runtime/net/transport.py; nothing here is public API.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from overlay.core.errors import FrameTooLarge, LocalProtocolError, NonCanonical, WireError
from overlay.core.ids import PeerId
from overlay.runtime.net.rate_limit import TokenBucket
from overlay.runtime.net.transport_backend import BackendStream
from overlay.runtime.net.transport_types import (
    Admit,
    Codec,
    OnMessage,
    OnRequest,
    TransportConfig,
    TransportStats,
)


@dataclass(slots=True)
class Registration:
    protocol: str
    codec: Codec
    on_message: OnMessage | None
    on_request: OnRequest | None
    #: Awaited with a one-way frame's size before it is delivered (RAW frames of at
    #: least ADMIT_MIN_BYTES): the stream is not read meanwhile (back-pressure).
    admit: Admit | None = None


class Item:
    """A frame waiting in an outbound queue; `done` is set for `send` callers."""

    __slots__ = ("done", "error", "frame")

    def __init__(self, frame: bytes, done: trio.Event | None = None) -> None:
        self.frame = frame
        self.done = done
        self.error: str | None = None


class Pending:
    __slots__ = ("done", "error", "peer", "protocol", "remote_error", "result")

    def __init__(self, peer: PeerId, protocol: str) -> None:
        self.peer = peer
        self.protocol = protocol
        self.done = trio.Event()
        self.result: object = None  # the decoded reply, not validated
        self.error: str | None = None  # our side failed (stream dropped)
        self.remote_error: str | None = None  # the peer refused


class Stream:
    """A backend stream with our framing state; writes are serialised by `lock`."""

    __slots__ = ("codec", "lock", "net", "outbound", "peer", "protocol")

    def __init__(
        self, net: BackendStream, peer: PeerId, protocol: str, codec: Codec, outbound: bool
    ) -> None:
        self.net = net
        self.peer = peer
        self.protocol = protocol
        self.codec = codec
        self.outbound = outbound
        self.lock = trio.Lock()


class Outbound:
    """Our long-lived stream to (peer, protocol) with its bounded queue."""

    def __init__(self, peer: PeerId, protocol: str, codec: Codec, queue_frames: int) -> None:
        self.peer = peer
        self.protocol = protocol
        self.codec = codec
        self.tx, self.rx = trio.open_memory_channel[Item](queue_frames)
        self.closed = False
        self.stream: Stream | None = None  # set once the stream is negotiated
        self.busy = False  # the writer task holds frames it has not written yet
        self.pending: set[int] = set()  # CBOR request ids awaiting a response
        self.raw_waiters: deque[Pending] = deque()  # RAW: responses come in order


class Drop(Exception):
    """Raised inside a read loop: reset this stream for `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sole_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested single-member groups, if that is the shape."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


def wire_reason(e: WireError) -> str:
    if isinstance(e, FrameTooLarge):
        return "frame_too_large"
    if isinstance(e, NonCanonical):
        return "non_canonical"
    return "malformed_frame"


def drain_queue(ch: Outbound, reason: str, on_item: Callable[[Item], None]) -> int:
    """Close `ch`'s queue and fail what is still in it; return how many frames."""
    ch.closed = True
    ch.tx.close()
    dropped = 0
    while True:
        try:
            item = ch.rx.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
        dropped += 1
        item.error = reason
        on_item(item)
        if item.done is not None:
            item.done.set()
    return dropped


class FrameWriter:
    """Writes frames to a stream: one writer at a time (the stream's lock), paced by
    the peer's token bucket when `[network] max_send_rate` is set, counted in
    `stats`. Holds one bucket per connected peer (`forget` drops it)."""

    def __init__(self, config: TransportConfig, stats: TransportStats) -> None:
        self._config = config
        self._stats = stats
        self._buckets: dict[PeerId, TokenBucket] = {}

    async def write(self, s: Stream, data: bytes, frames: int = 1) -> None:
        if s.lock.locked():
            await s.lock.acquire()
        else:
            s.lock.acquire_nowait()  # no extra checkpoint: the write is one
        try:
            if self._config.max_send_rate:
                await self._throttle(s.peer, len(data))
            await s.net.write(data)
        finally:
            s.lock.release()
        self._stats.bytes_out += len(data)
        self._stats.frames_out += frames

    async def pace(self, peer: PeerId, size: int) -> None:
        """For raw streams that send in bulk: wait as `peer`'s bucket says, count it."""
        if self._config.max_send_rate:
            await self._throttle(peer, size)
        self._stats.bytes_out += size

    async def _throttle(self, peer: PeerId, size: int) -> None:
        """Wait as the peer's token bucket says (`max_send_rate`)."""
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = self._buckets[peer] = TokenBucket(self._config.max_send_rate)
        delay = bucket.take(size, trio.current_time())
        if delay > 0:
            self._stats.rate_limited_s += delay
            await trio.sleep(delay)

    def forget(self, peer: PeerId) -> None:
        """The peer disconnected: drop its bucket (a new connection starts full)."""
        self._buckets.pop(peer, None)


def raw_body(obj: object) -> bytes:
    """The body of a raw-protocol frame; a raw protocol sends bytes only."""
    if not isinstance(obj, (bytes, bytearray, memoryview)):
        raise LocalProtocolError(f"raw protocols send bytes, not {type(obj).__name__}")
    return bytes(obj)


async def reset_stream(net: BackendStream) -> None:
    """Reset `net`, waiting at most a second, shielded from cancellation."""
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        try:
            await net.reset()
        except Exception:  # already gone: nothing left to reset
            return
