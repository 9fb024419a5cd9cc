"""The sending half of the transport adapter: per-(peer, protocol) outbound queues,
the stream each one opens, the batched write loop and the failure of everything
queued when a stream ends.

`Sender` is a collaborator of `Transport` (overlay/runtime/net/transport.py) with a
narrow interface: the config and stats, the `FrameWriter` (lock, rate limit), the
`Receiver` that reads the responses on our streams, the pending requests it fails
when a stream ends, and four callables of the transport (connect to a peer, open a
stream, emit an event, spawn a task). It owns the outbound channels and the queued
bytes per peer. Frame order on a stream is the order of `enqueue` calls; a queue
is bounded in frames and `offer` bounds queued bytes per peer, so a slow peer costs
dropped frames, not memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVarTuple

import structlog
import trio

from overlay.core.ids import PeerId
from overlay.p2p.errors import StreamError
from overlay.runtime.net.transport_backend import BackendStream
from overlay.runtime.net.transport_channels import (
    FrameWriter,
    Item,
    Outbound,
    Pending,
    Stream,
    drain_queue,
    reset_stream,
)
from overlay.runtime.net.transport_inbound import Receiver
from overlay.runtime.net.transport_types import (
    Codec,
    DialError,
    SendError,
    SendFailed,
    TransportConfig,
    TransportEvent,
    TransportStats,
)

log = structlog.get_logger("colony.transport")

#: Queued frames are coalesced into one stream write up to this size: fewer Yamux
#: and Noise frames per byte (both cost a Python-level header and copy each).
WRITE_BATCH_BYTES = 1024 * 1024

_Args = TypeVarTuple("_Args")


class Spawn(Protocol):
    """Start `fn(*args)` as a task of the running transport."""

    def __call__(self, fn: Callable[[*_Args], Awaitable[object]], *args: *_Args) -> None: ...


class Sender:
    """Owns the outbound channels: opens their streams, writes, fails them."""

    def __init__(
        self,
        config: TransportConfig,
        stats: TransportStats,
        writer: FrameWriter,
        receiver: Receiver,
        pending: Mapping[int, Pending],
        *,
        connect: Callable[[PeerId], Awaitable[None]],
        new_stream: Callable[[PeerId, str], Awaitable[BackendStream]],
        emit: Callable[[TransportEvent], None],
        spawn: Spawn,
    ) -> None:
        self.config = config
        self.stats = stats
        self._writer = writer
        self._receiver = receiver
        self._pending = pending
        self._connect = connect
        self._new_stream = new_stream
        self._emit = emit
        self._spawn = spawn
        #: Our long-lived stream per (peer, protocol); a failed one is removed.
        self.channels: dict[tuple[PeerId, str], Outbound] = {}
        #: Bytes queued and not yet written, per peer (an entry goes at 0).
        self.queued_bytes: dict[PeerId, int] = {}

    def channel(self, peer: PeerId, protocol: str, codec: Codec) -> Outbound:
        """The open channel to (peer, protocol), or a new one whose stream opens now."""
        key = (peer, protocol)
        ch = self.channels.get(key)
        if ch is not None and not ch.closed and ch.stream is not None and ch.stream.net.gone:
            # Its connection closed under it (a relayed circuit replaced by a direct
            # connection, say) while the reader had already ended at the peer's EOF:
            # end it (its run fails what still waits on it) and open a new stream
            # rather than fail this frame on the dead one.
            ch.closed = True
            ch.tx.close()
        if ch is None or ch.closed:
            ch = Outbound(peer, protocol, codec, self.config.queue_frames)
            self.channels[key] = ch
            self._spawn(self._run, ch)
        return ch

    def offer(self, ch: Outbound, frame: bytes) -> bool:
        """Queue `frame` without waiting; False (nothing queued) when the peer's
        byte budget or the channel's frame queue is full, or the channel closed."""
        queued = self.queued_bytes.get(ch.peer, 0)
        if queued + len(frame) > self.config.queue_bytes_per_peer:
            return False
        try:
            ch.tx.send_nowait(Item(frame))
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        self.queued_bytes[ch.peer] = queued + len(frame)
        return True

    def close_peer(self, peer: PeerId) -> None:
        """Stop every channel to `peer` from taking frames (their streams end)."""
        for (p, _), ch in list(self.channels.items()):
            if p == peer:
                ch.closed = True
                ch.tx.close()

    async def enqueue(self, ch: Outbound, item: Item) -> None:
        """Queue `item` in order, waiting for room (back-pressure); SendError when
        the channel is closed or the fast-path write fails for a `post`-style item."""
        s = ch.stream
        if (
            s is not None
            and not ch.busy
            and ch.rx.statistics().current_buffer_used == 0
            and not s.lock.locked()
        ):
            # Fast path: nothing queued and the writer idle, so writing here keeps
            # frame order and saves a task switch per request (a round trip on
            # loopback is only ~0.1 ms on the native stack).
            try:
                await self._writer.write(s, item.frame)
            except StreamError as e:
                item.error = f"{type(e).__name__}: {e}"
                self._spawn(reset_stream, s.net)
                # End the channel here: its reader may be gone already (a peer's
                # half-close ends the reader but keeps the channel writing).
                ch.closed = True
                ch.tx.close()
            finally:
                if item.done is not None:
                    item.done.set()
            if item.error is not None and item.done is None:
                raise SendError(f"stream to {ch.peer.short()} on {ch.protocol} failed")
            return
        try:
            await ch.tx.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise SendError(f"stream to {ch.peer.short()} on {ch.protocol} closed") from None
        self.queued_bytes[ch.peer] = self.queued_bytes.get(ch.peer, 0) + len(item.frame)

    async def _run(self, ch: Outbound) -> None:
        reason = "closed"
        s: Stream | None = None
        try:
            with trio.fail_after(self.config.dial_timeout_s + self.config.stream_open_timeout_s):
                await self._connect(ch.peer)
                net = await self._new_stream(ch.peer, ch.protocol)
            s = Stream(net, ch.peer, ch.protocol, ch.codec, outbound=True)
            ch.stream = s
            self.stats.streams_opened += 1
            async with trio.open_nursery() as n:

                async def read_then_stop() -> None:
                    nonlocal reason
                    assert s is not None
                    reason = await self._receiver.read_loop(s, ch)
                    if reason == "eof" and not ch.pending and not ch.raw_waiters:
                        # The peer closed only its half: helia's Bitswap does so on
                        # every inbound stream at once (it answers on a stream of its
                        # own) and still reads ours. Keep writing; a peer that is
                        # really gone fails the next write.
                        return
                    n.cancel_scope.cancel()

                n.start_soon(read_then_stop)
                await self._write_loop(ch, s)
                n.cancel_scope.cancel()
        except DialError as e:
            reason = f"dial_failed: {e}"
        except trio.TooSlowError:
            reason = "stream_open_timeout"
        except Exception as e:
            reason = f"stream_failed: {type(e).__name__}: {e}"
        finally:
            dropped = self.fail(ch, reason)
            if s is not None:
                await self._receiver.finish_stream(s, reason)
            if dropped:
                self._emit(SendFailed(ch.peer, ch.protocol, reason, dropped))

    async def _write_loop(self, ch: Outbound, s: Stream) -> None:
        async for item in ch.rx:
            ch.busy = True
            batch = [item]
            size = len(item.frame)
            while size < WRITE_BATCH_BYTES:
                try:
                    more = ch.rx.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                batch.append(more)
                size += len(more.frame)
            # Until the write returns, the batch has failed: a write cancelled
            # because the stream ended (its reader saw a reset) sent it only in part.
            error = "stream ended before the frame was written"
            try:
                data = item.frame if len(batch) == 1 else b"".join(i.frame for i in batch)
                await self._writer.write(s, data, len(batch))
                error = ""
            except StreamError as e:
                error = f"{type(e).__name__}: {e}"
                raise
            finally:
                ch.busy = False
                self.queued_bytes[ch.peer] = max(0, self.queued_bytes.get(ch.peer, 0) - size)
                for i in batch:
                    if error:
                        i.error = error
                    if i.done is not None:
                        i.done.set()

    def fail(self, ch: Outbound, reason: str) -> int:
        """Close the queue, fail everything waiting on it; return frames dropped."""
        if self.channels.get((ch.peer, ch.protocol)) is ch:
            del self.channels[(ch.peer, ch.protocol)]

        def unqueue(item: Item) -> None:
            left = self.queued_bytes.get(ch.peer, 0) - len(item.frame)
            self.queued_bytes[ch.peer] = max(0, left)

        dropped = drain_queue(ch, reason, unqueue)
        for rid in ch.pending:
            p = self._pending.get(rid)
            if p is not None and not p.done.is_set():
                p.error = reason
                p.done.set()
        for p in ch.raw_waiters:
            p.error = reason
            p.done.set()
        ch.raw_waiters.clear()
        if not self.queued_bytes.get(ch.peer):
            self.queued_bytes.pop(ch.peer, None)
        self.stats.frames_dropped_send_failed += dropped
        return dropped
