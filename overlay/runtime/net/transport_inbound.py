"""The receiving half of the transport adapter: inbound streams, the read loop,
frame dispatch (messages, requests, responses) and stream teardown.

`Receiver` is a collaborator of `Transport` (overlay/runtime/net/transport.py) with
a narrow interface: the config and stats, the protocol registrations and pending
requests it reads (both owned by the transport), and the `FrameWriter` it answers
with. It owns the count of open inbound streams per (peer, protocol), bounded by
`max_inbound_streams_per_peer_protocol`. Every rule about a peer's bad input lives
here: an oversize, malformed or non-canonical frame, or a handler's failure, costs
that stream only.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
import trio

from overlay.core.errors import LocalProtocolError, RemoteProtocolError, WireError
from overlay.core.ids import PeerId
from overlay.core.wire import cbor_decode
from overlay.p2p.errors import StreamError, StreamResetError
from overlay.runtime.net.framing import (
    FrameReader,
    Kind,
    decode_envelope,
    encode_envelope,
    encode_raw_frame,
)
from overlay.runtime.net.transport_backend import BackendStream
from overlay.runtime.net.transport_channels import (
    Drop,
    FrameWriter,
    Outbound,
    Pending,
    Registration,
    Stream,
    raw_body,
    reset_stream,
    wire_reason,
)
from overlay.runtime.net.transport_types import (
    ADMIT_MIN_BYTES,
    Codec,
    TransportConfig,
    TransportStats,
)

log = structlog.get_logger("colony.transport")

READ_CHUNK_BYTES = 256 * 1024


class Receiver:
    """Reads streams, dispatches their frames and tears them down."""

    def __init__(
        self,
        config: TransportConfig,
        stats: TransportStats,
        handlers: Mapping[str, Registration],
        pending: Mapping[int, Pending],
        writer: FrameWriter,
    ) -> None:
        self.config = config
        self.stats = stats
        self._handlers = handlers
        self._pending = pending
        self._writer = writer
        #: Open inbound streams per (peer, protocol); an entry goes when its count is 0.
        self.open_streams: dict[tuple[PeerId, str], int] = {}

    async def on_stream(self, net: BackendStream, peer: PeerId, reg: Registration) -> None:
        """Serve an inbound stream of `reg.protocol` until it ends."""
        key = (peer, reg.protocol)
        if self.open_streams.get(key, 0) >= self.config.max_inbound_streams_per_peer_protocol:
            self.count_drop("too_many_streams")
            log.info("stream_dropped", peer=str(peer), protocol=reg.protocol,
                     reason="too_many_streams")
            await reset_stream(net)
            return
        self.open_streams[key] = self.open_streams.get(key, 0) + 1
        self.stats.streams_accepted += 1
        s = Stream(net, peer, reg.protocol, reg.codec, outbound=False)
        reason = "closed"
        try:
            reason = await self.read_loop(s, None)
        finally:
            left = self.open_streams.get(key, 1) - 1
            if left > 0:
                self.open_streams[key] = left
            else:
                self.open_streams.pop(key, None)
            with trio.CancelScope(shield=True):
                await self.finish_stream(s, reason)

    async def read_loop(self, s: Stream, ch: Outbound | None) -> str:
        """Read frames until EOF or a fault; return why the stream ended."""
        decoder = FrameReader(self.config.max_frame_bytes)
        inflight = trio.Semaphore(self.config.max_inflight_requests_per_stream)
        reason = "eof"
        async with trio.open_nursery() as serving:
            try:
                while True:
                    data = await s.net.read(READ_CHUNK_BYTES)
                    if not data:
                        reason = "eof" if decoder.at_frame_boundary() else "truncated_frame"
                        break
                    self.stats.bytes_in += len(data)
                    decoder.feed(data)
                    while (body := decoder.next_body()) is not None:
                        self.stats.frames_in += 1
                        await self._dispatch(s, ch, body, serving, inflight)
            except StreamResetError:
                reason = "reset"
            except StreamError as e:
                reason = f"stream_error: {e}"
            except WireError as e:
                reason = wire_reason(e)
                log.info("stream_dropped", peer=str(s.peer), protocol=s.protocol,
                         reason=reason, detail=str(e)[:200])
                serving.cancel_scope.cancel()
            except Drop as e:
                reason = e.reason
                serving.cancel_scope.cancel()
        return reason

    async def _dispatch(
        self,
        s: Stream,
        ch: Outbound | None,
        body: bytes,
        serving: trio.Nursery,
        inflight: trio.Semaphore,
    ) -> None:
        reg = self._handlers.get(s.protocol)
        if s.codec is Codec.RAW:
            if ch is not None and ch.raw_waiters:
                waiter = ch.raw_waiters.popleft()
                waiter.result = body
                waiter.done.set()
            elif reg is not None and reg.on_request is not None and not s.outbound:
                await self._serve(s, reg, 0, body)  # in order: responses match by position
            else:
                if reg is not None and reg.admit is not None and len(body) >= ADMIT_MIN_BYTES:
                    await reg.admit(len(body))
                self._deliver(s, reg, body)
            return
        env = decode_envelope(cbor_decode(body))
        if env.kind is Kind.MESSAGE:
            self._deliver(s, reg, env.body)
        elif env.kind is Kind.REQUEST:
            if reg is None or reg.on_request is None:
                refusal = encode_envelope(Kind.ERROR, "no request handler", env.rid)
                await self._writer.write(s, refusal)
                return
            await inflight.acquire()  # back-pressure: stop reading while saturated
            serving.start_soon(self._serve_and_release, s, reg, env.rid, env.body, inflight)
        else:
            p = self._pending.get(env.rid)
            if p is None or p.peer != s.peer or p.protocol != s.protocol:
                self.stats.unmatched_responses += 1  # late (timed out) or bogus
                return
            if env.kind is Kind.RESPONSE:
                p.result = env.body
            else:
                p.remote_error = str(env.body)
            p.done.set()

    def _deliver(self, s: Stream, reg: Registration | None, obj: object) -> None:
        if reg is None or reg.on_message is None:
            raise Drop("unexpected_message")
        try:
            reg.on_message(s.peer, obj)
        except RemoteProtocolError as e:
            log.info("stream_dropped", peer=str(s.peer), protocol=s.protocol,
                     reason="bad_message", detail=str(e)[:200])
            raise Drop("bad_message") from None
        except LocalProtocolError:
            raise  # our bug: crash loudly, as the driver does
        except Exception:
            self.stats.handler_errors += 1
            log.exception("message_handler_failed", peer=str(s.peer), protocol=s.protocol)
            raise Drop("handler_error") from None

    async def _serve_and_release(
        self, s: Stream, reg: Registration, rid: int, obj: object, inflight: trio.Semaphore
    ) -> None:
        try:
            await self._serve(s, reg, rid, obj)
        finally:
            inflight.release()

    async def _serve(self, s: Stream, reg: Registration, rid: int, obj: object) -> None:
        assert reg.on_request is not None
        self.stats.requests_served += 1
        frame: bytes | None
        try:
            with trio.fail_after(self.config.request_timeout_s):
                result = await reg.on_request(s.peer, obj)
            if s.codec is Codec.RAW:
                frame = None if result is None else encode_raw_frame(
                    raw_body(result), self.config.max_frame_bytes
                )
            else:
                frame = encode_envelope(Kind.RESPONSE, result, rid, self.config.max_frame_bytes)
        except RemoteProtocolError as e:
            if s.codec is Codec.RAW:
                raise Drop("bad_request") from None
            frame = encode_envelope(Kind.ERROR, f"refused: {e}", rid)
        except LocalProtocolError:
            raise
        except Exception as e:
            self.stats.handler_errors += 1
            log.exception("request_handler_failed", peer=str(s.peer), protocol=s.protocol)
            if s.codec is Codec.RAW:
                raise Drop("handler_error") from None
            frame = encode_envelope(Kind.ERROR, f"internal error: {type(e).__name__}", rid)
        if frame is not None:
            try:
                await self._writer.write(s, frame)
            except StreamError:
                return  # the peer went away; the read loop reports why

    # ------------------------------------------------------------ stream teardown

    def count_drop(self, reason: str) -> None:
        key = reason.split(":", 1)[0]
        self.stats.streams_dropped[key] = self.stats.streams_dropped.get(key, 0) + 1

    async def finish_stream(self, s: Stream, reason: str) -> None:
        if reason in ("eof", "closed"):
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                try:
                    await s.net.close()
                except Exception:
                    await reset_stream(s.net)
            return
        if reason not in ("reset",) and not reason.startswith("stream_error"):
            self.count_drop(reason)
        await reset_stream(s.net)
