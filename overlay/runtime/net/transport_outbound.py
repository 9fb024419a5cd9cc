"""The sending half of the transport adapter: per-(peer, protocol) outbound queues,
the stream each one opens, the batched write loop, the send-rate limit and the
failure of everything queued when a stream ends.

A mixin of `Transport` (overlay/runtime/net/transport.py), split out to keep each
module readable; it uses the transport's state declared below. Frame order on a
stream is the order of `_enqueue` calls; a queue is bounded in frames (and `post`
bounds queued bytes per peer), so a slow peer costs dropped frames, not memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVarTuple

import structlog
import trio

from overlay.core.errors import LocalProtocolError
from overlay.core.ids import PeerId
from overlay.p2p.errors import StreamError
from overlay.runtime.net.rate_limit import TokenBucket
from overlay.runtime.net.transport_backend import Backend
from overlay.runtime.net.transport_channels import Item, Outbound, Stream, drain_queue
from overlay.runtime.net.transport_inbound import InboundMixin
from overlay.runtime.net.transport_types import (
    DialError,
    SendError,
    SendFailed,
    TransportEvent,
)

log = structlog.get_logger("colony.transport")

#: Queued frames are coalesced into one stream write up to this size: fewer Yamux
#: and Noise frames per byte (both cost a Python-level header and copy each).
WRITE_BATCH_BYTES = 1024 * 1024

_Args = TypeVarTuple("_Args")


class OutboundMixin(InboundMixin):
    peer_id: PeerId
    _backend: Backend
    _nursery: trio.Nursery | None
    _outbound: dict[tuple[PeerId, str], Outbound]
    _queued_bytes: dict[PeerId, int]
    _buckets: dict[PeerId, TokenBucket]

    async def _ensure_connected(self, peer: PeerId) -> None:
        raise NotImplementedError  # Transport._ensure_connected

    def _emit(self, event: TransportEvent) -> None:
        raise NotImplementedError  # Transport._emit

    async def _enqueue(self, ch: Outbound, item: Item) -> None:
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
                await self._write(s, item.frame)
            except StreamError as e:
                item.error = f"{type(e).__name__}: {e}"
                self._spawn(self._reset, s.net)
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
        self._queued_bytes[ch.peer] = self._queued_bytes.get(ch.peer, 0) + len(item.frame)

    def _spawn(self, fn: Callable[[*_Args], Awaitable[object]], *args: *_Args) -> None:
        if self._nursery is None:
            raise LocalProtocolError("transport is not running (use Transport.open)")
        self._nursery.start_soon(fn, *args)

    async def _run_outbound(self, ch: Outbound) -> None:
        reason = "closed"
        s: Stream | None = None
        try:
            with trio.fail_after(self.config.dial_timeout_s + self.config.stream_open_timeout_s):
                await self._ensure_connected(ch.peer)
                net = await self._backend.new_stream(ch.peer, ch.protocol)
            s = Stream(net, ch.peer, ch.protocol, ch.codec, outbound=True)
            ch.stream = s
            self.stats.streams_opened += 1
            async with trio.open_nursery() as n:

                async def read_then_stop() -> None:
                    nonlocal reason
                    assert s is not None
                    reason = await self._read_loop(s, ch)
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
            dropped = self._fail_outbound(ch, reason)
            if s is not None:
                await self._finish_stream(s, reason)
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
            try:
                data = item.frame if len(batch) == 1 else b"".join(i.frame for i in batch)
                await self._write(s, data, len(batch))
            except StreamError as e:
                for i in batch:
                    i.error = f"{type(e).__name__}: {e}"
                raise
            finally:
                ch.busy = False
                self._queued_bytes[ch.peer] = max(0, self._queued_bytes.get(ch.peer, 0) - size)
                for i in batch:
                    if i.done is not None:
                        i.done.set()

    async def _write(self, s: Stream, data: bytes, frames: int = 1) -> None:
        if s.lock.locked():
            await s.lock.acquire()
        else:
            s.lock.acquire_nowait()  # no extra checkpoint: the write is one
        try:
            if self.config.max_send_rate:
                await self._throttle(s.peer, len(data))
            await s.net.write(data)
        finally:
            s.lock.release()
        self.stats.bytes_out += len(data)
        self.stats.frames_out += frames

    async def _throttle(self, peer: PeerId, size: int) -> None:
        """Wait as the peer's token bucket says (`max_send_rate`)."""
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = self._buckets[peer] = TokenBucket(self.config.max_send_rate)
        delay = bucket.take(size, trio.current_time())
        if delay > 0:
            self.stats.rate_limited_s += delay
            await trio.sleep(delay)

    def _fail_outbound(self, ch: Outbound, reason: str) -> int:
        """Close the queue, fail everything waiting on it; return frames dropped."""
        if self._outbound.get((ch.peer, ch.protocol)) is ch:
            del self._outbound[(ch.peer, ch.protocol)]

        def unqueue(item: Item) -> None:
            left = self._queued_bytes.get(ch.peer, 0) - len(item.frame)
            self._queued_bytes[ch.peer] = max(0, left)

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
        if not self._queued_bytes.get(ch.peer):
            self._queued_bytes.pop(ch.peer, None)
        self.stats.frames_dropped_send_failed += dropped
        return dropped
