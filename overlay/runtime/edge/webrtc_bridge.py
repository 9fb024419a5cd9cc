"""WebRTC data channels (aiortc) for the trio daemon: the asyncio bridge.

aiortc runs on asyncio; the daemon runs on trio. `AsyncioBridge` runs one asyncio
event loop in a dedicated daemon thread, and every aiortc object lives and is
touched only there. Crossing the line:

* trio → asyncio: `await bridge.call(coro_fn, *args)` schedules the coroutine with
  `asyncio.run_coroutine_threadsafe` and waits on a trio Event that the future's
  done-callback sets via `TrioToken.run_sync_soon`. Cancelling the trio caller
  cancels the asyncio task.
* asyncio → trio: data-channel callbacks hand bytes to trio with `run_sync_soon`.

Why a thread and not trio-asyncio: trio-asyncio must wrap the whole trio run; a
thread keeps the daemon untouched and costs one cross-thread hop per `send_all` and
per received message (figures in docs/edge-nat.md, measured by bench/webrtc.py).

`DataChannelStream` is a `trio.abc.Stream` over one ordered, reliable data channel:
the libp2p wire stack (multistream-select, Noise, Yamux) runs over it exactly as
over a TCP socket. Invariants:
* writes are cut into messages of at most `MESSAGE_BYTES` (SCTP message limit
  64 KiB; aiortc's default remote max-message-size);
* back-pressure on send: `send_all` returns only when the channel's
  `bufferedAmount` is below `SEND_HIGH_WATER_BYTES` (waits on `bufferedamountlow`);
* receive buffer bounded by `max_receive_buffer_bytes`: the peer's Yamux windows
  keep it far below that; a peer that overruns it breaks the stream (its fault, it
  costs that connection only);
* `aclose` closes the channel and its peer connection; after the remote closes, reads
  drain then return b""; a send on a gone channel or bridge breaks the stream.

ICE: host candidates, server-reflexive ones from the configured STUN servers and
relayed ones from configured TURN servers; candidates are gathered fully before
the SDP is returned (no trickle), so signalling is exactly one offer and one answer.
Both sides open the channel pre-negotiated (id 0), so neither waits for an
in-band DATA_CHANNEL_OPEN.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

import structlog
import trio

from overlay.runtime.process.config import Config

if TYPE_CHECKING:  # aiortc itself is imported lazily (~50 MiB RSS): see LazyEndpoint
    from aiortc import RTCDataChannel, RTCPeerConnection

log = structlog.get_logger("colony.webrtc")

T = TypeVar("T")
Args = TypeVarTuple("Args")

#: Largest data-channel message we send (aiortc/SCTP default limit is 65,536).
MESSAGE_BYTES = 64 * 1024 - 1024
#: `send_all` waits while more than this is queued in the SCTP send buffer.
SEND_HIGH_WATER_BYTES = 1024 * 1024
#: ... until it falls to this (the channel's bufferedAmountLowThreshold).
SEND_LOW_WATER_BYTES = 256 * 1024
#: Received bytes held for the reader at most (Yamux windows keep us far below).
DEFAULT_MAX_RECEIVE_BUFFER_BYTES = 32 * 1024 * 1024
CHANNEL_LABEL = "colony"
CHANNEL_ID = 0


class WebRtcError(Exception):
    """A WebRTC session could not be set up (bad SDP, ICE failed, timeout)."""


@dataclass(frozen=True, slots=True)
class IceConfig:
    """ICE servers, from `[edge] stun`, `[edge] turn`, `turn_username`, `turn_password`.

    STUN urls look like `stun:host:3478`; TURN urls `turn:host:3478?transport=udp`.
    """

    stun: tuple[str, ...] = ()
    turn: tuple[str, ...] = ()
    turn_username: str = ""
    turn_password: str = ""

    @classmethod
    def from_config(cls, cfg: Config) -> IceConfig:
        edge = cfg.get("edge", {})
        return cls(
            stun=tuple(edge.get("stun", ())),
            turn=tuple(edge.get("turn", ())),
            turn_username=str(edge.get("turn_username", "")),
            turn_password=str(edge.get("turn_password", "")),
        )


# ---------------------------------------------------------------- the bridge


class AsyncioBridge:
    """One asyncio loop in a daemon thread; use `async with open_bridge() as b`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="colony-webrtc-asyncio", daemon=True)
        self._token: trio.lowlevel.TrioToken | None = None
        self.calls = 0
        #: Live peer connections (asyncio side), closed gracefully at stop.
        self.pcs: set[RTCPeerConnection] = set()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Let cancelled tasks unwind before the loop goes.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread.start()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        # Close every peer connection first (ICE/DTLS/SCTP tasks end cleanly), then
        # stop the loop. Blocking here is fine: this runs once, at shutdown.
        fut = asyncio.run_coroutine_threadsafe(self._close_all(), self.loop)
        with contextlib.suppress(Exception):
            fut.result(timeout=5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5.0)

    async def _close_all(self) -> None:
        pcs = list(self.pcs)
        self.pcs.clear()
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)

    @property
    def token(self) -> trio.lowlevel.TrioToken:
        if self._token is None:
            raise RuntimeError("bridge not started")
        return self._token

    def to_trio(self, fn: Callable[[*Args], object], *args: *Args) -> None:
        """From the asyncio thread: run `fn(*args)` in trio soon (non-blocking)."""
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(fn, *args)

    async def call(self, fn: Callable[[*Args], Awaitable[T]], *args: *Args) -> T:
        """From trio: run `await fn(*args)` on the asyncio loop and return its result."""
        self.calls += 1
        if self.stopped:
            raise WebRtcError("the WebRTC bridge has stopped")
        done = trio.Event()
        fut = asyncio.run_coroutine_threadsafe(_as_coro(fn, *args), self.loop)
        fut.add_done_callback(lambda _f: self.to_trio(done.set))
        try:
            await done.wait()
        except BaseException:
            fut.cancel()
            raise
        return fut.result()

    def call_soon(self, fn: Callable[[*Args], object], *args: *Args) -> None:
        """From trio: run a plain function on the asyncio loop, fire and forget."""
        if not self.stopped:
            self.loop.call_soon_threadsafe(fn, *args)

    @property
    def stopped(self) -> bool:
        """After stop() (or before start()) nothing can run on the loop: every
        peer connection is closed already."""
        return not self._thread.is_alive() or self.loop.is_closed()


async def _as_coro(fn: Callable[[*Args], Awaitable[T]], *args: *Args) -> T:
    return await fn(*args)


@contextlib.asynccontextmanager
async def open_bridge() -> AsyncIterator[AsyncioBridge]:
    bridge = AsyncioBridge()
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()


# ---------------------------------------------------------------- the stream


class DataChannelStream(trio.abc.Stream):
    """A reliable, ordered RTCDataChannel as a trio byte stream (see module doc)."""

    def __init__(
        self,
        bridge: AsyncioBridge,
        pc: RTCPeerConnection,
        channel: RTCDataChannel,
        *,
        max_receive_buffer_bytes: int = DEFAULT_MAX_RECEIVE_BUFFER_BYTES,
        path: str = "unknown",
    ) -> None:
        self._bridge = bridge
        self._pc = pc
        self._channel = channel
        self._max_rx = max_receive_buffer_bytes
        self._rx: deque[bytes] = deque()
        self._rx_bytes = 0
        self._rx_ready = trio.Event()
        self._eof = False
        self._broken: str | None = None
        self._closed = False
        self._send_lock = trio.StrictFIFOLock()
        self._recv_lock = trio.StrictFIFOLock()
        #: "host", "srflx", "prflx" or "relay": the ICE candidate types in use.
        self.path = path
        self.bytes_in = 0
        self.bytes_out = 0

    # -- asyncio side (called via the bridge, in the trio thread) --------------

    def _deliver(self, data: bytes) -> None:
        if self._eof or self._broken:
            return
        self._rx.append(data)
        self._rx_bytes += len(data)
        self.bytes_in += len(data)
        if self._rx_bytes > self._max_rx:
            self._broken = "receive buffer overflow (peer ignored flow control)"
            self._rx.clear()
            self._bridge.call_soon(_close_pc_soon, self._pc, self._channel, self._bridge)
        self._rx_ready.set()

    def _remote_closed(self) -> None:
        self._eof = True
        self._rx_ready.set()

    # -- trio.abc.Stream -------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        async with self._recv_lock:
            while not self._rx:
                if self._closed:
                    raise trio.ClosedResourceError("data channel stream closed")
                if self._broken:
                    raise trio.BrokenResourceError(self._broken)
                if self._eof:
                    return b""
                self._rx_ready = trio.Event()
                await self._rx_ready.wait()
            first = self._rx[0]
            if max_bytes is None or len(first) <= max_bytes:
                self._rx.popleft()
                # Coalesce small queued messages into one read (fewer wake-ups upstream).
                out = [first]
                size = len(first)
                limit = max_bytes if max_bytes is not None else 256 * 1024
                while self._rx and size + len(self._rx[0]) <= limit:
                    nxt = self._rx.popleft()
                    out.append(nxt)
                    size += len(nxt)
                self._rx_bytes -= size
                return out[0] if len(out) == 1 else b"".join(out)
            self._rx[0] = first[max_bytes:]
            self._rx_bytes -= max_bytes
            return first[:max_bytes]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._send_lock:
            if self._closed:
                raise trio.ClosedResourceError("data channel stream closed")
            if self._broken or self._eof:
                raise trio.BrokenResourceError(self._broken or "data channel closed by peer")
            view = memoryview(bytes(data))
            chunks = [
                bytes(view[i : i + MESSAGE_BYTES]) for i in range(0, len(view), MESSAGE_BYTES)
            ]
            if not chunks:
                return
            try:  # a bridge stopped under us (daemon shutdown) is a broken channel too
                ok = await self._bridge.call(_send_chunks, self._channel, chunks)
            except WebRtcError as e:
                ok, self._broken = False, self._broken or str(e)
            if not ok:
                self._broken = self._broken or "data channel closed while sending"
                raise trio.BrokenResourceError(self._broken)
            self.bytes_out += len(view)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._rx_ready.set()
        if self._bridge.stopped:  # the bridge closed every peer connection already
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True), trio.move_on_after(5.0):
            await self._bridge.call(_close_pc, self._pc, self._channel, self._bridge)

    @property
    def remote_closed(self) -> bool:
        return self._eof or self._broken is not None


async def _send_chunks(channel: RTCDataChannel, chunks: list[bytes]) -> bool:
    """asyncio side of send_all: queue chunks, wait while the send buffer is high."""
    for chunk in chunks:
        if channel.readyState != "open":
            return False
        channel.send(chunk)
        if channel.bufferedAmount > SEND_HIGH_WATER_BYTES:
            low = asyncio.Event()

            def on_low(low: asyncio.Event = low) -> None:
                low.set()

            def on_close(low: asyncio.Event = low) -> None:
                low.set()

            channel.on("bufferedamountlow", on_low)
            channel.on("close", on_close)
            try:
                while (
                    channel.bufferedAmount > SEND_LOW_WATER_BYTES and channel.readyState == "open"
                ):
                    low.clear()
                    await low.wait()
            finally:
                channel.remove_listener("bufferedamountlow", on_low)
                channel.remove_listener("close", on_close)
    return bool(channel.readyState == "open")


async def _close_pc(pc: RTCPeerConnection, channel: RTCDataChannel, bridge: AsyncioBridge) -> None:
    bridge.pcs.discard(pc)
    with contextlib.suppress(Exception):
        channel.close()
    with contextlib.suppress(Exception):
        await pc.close()


_CLOSING: set[asyncio.Future[None]] = set()  # keep close tasks referenced until done


def _close_pc_soon(pc: RTCPeerConnection, channel: RTCDataChannel, bridge: AsyncioBridge) -> None:
    task = asyncio.ensure_future(_close_pc(pc, channel, bridge))
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


# ---------------------------------------------------------------- sessions


class PendingSession:
    """One side of a WebRTC session between SDP exchange and an open channel."""

    def __init__(
        self, bridge: AsyncioBridge, pc: RTCPeerConnection, channel: RTCDataChannel
    ) -> None:
        self.bridge = bridge
        self.pc = pc
        self.channel = channel
        self.opened = trio.Event()
        self.failed: str | None = None
        self.stream: DataChannelStream | None = None

    async def wait_open(self, timeout_s: float) -> DataChannelStream:
        """Wait for ICE + DTLS + SCTP; raise WebRtcError (and close) on failure."""
        with trio.move_on_after(timeout_s):
            await self.opened.wait()
        if self.stream is None or self.failed is not None:
            reason = self.failed or f"no data channel within {timeout_s:.0f} s (ICE failed?)"
            await self.close()
            raise WebRtcError(reason)
        return self.stream

    async def close(self) -> None:
        if self.bridge.stopped:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True), trio.move_on_after(5.0):
            await self.bridge.call(_close_pc, self.pc, self.channel, self.bridge)


class WebRtcEndpoint:
    """Creates WebRTC sessions (offers and answers) on one bridge."""

    def __init__(
        self,
        bridge: AsyncioBridge,
        ice: IceConfig | None = None,
        *,
        max_receive_buffer_bytes: int = DEFAULT_MAX_RECEIVE_BUFFER_BYTES,
    ) -> None:
        self.bridge = bridge
        self.ice = ice or IceConfig()
        self._max_rx = max_receive_buffer_bytes

    async def offer(self) -> tuple[str, PendingSession]:
        """Gather candidates and return (offer SDP, session awaiting the answer)."""
        session: PendingSession = await self.bridge.call(self._new_session)
        sdp: str = await self.bridge.call(_make_offer, session.pc)
        return sdp, session

    async def answer(self, offer_sdp: str) -> tuple[str, PendingSession]:
        """Take a remote offer; return (answer SDP, session that will open)."""
        problem = sdp_problem(offer_sdp)
        if problem:
            raise WebRtcError(f"bad offer: {problem}")
        session: PendingSession = await self.bridge.call(self._new_session)
        try:
            sdp: str = await self.bridge.call(_make_answer, session.pc, offer_sdp)
        except Exception as e:
            await session.close()
            raise WebRtcError(f"bad offer: {type(e).__name__}: {e}") from None
        return sdp, session

    async def complete(self, session: PendingSession, answer_sdp: str) -> None:
        """Apply the remote answer to an offering session."""
        try:
            await self.bridge.call(_apply_answer, session.pc, answer_sdp)
        except Exception as e:
            await session.close()
            raise WebRtcError(f"bad answer: {type(e).__name__}: {e}") from None

    async def _new_session(self) -> PendingSession:
        """asyncio side: a peer connection with one pre-negotiated channel."""
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

        servers = [RTCIceServer(urls=u) for u in self.ice.stun]
        servers += [
            RTCIceServer(
                urls=u,
                username=self.ice.turn_username or None,
                credential=self.ice.turn_password or None,
            )
            for u in self.ice.turn
        ]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.bridge.pcs.add(pc)
        channel = pc.createDataChannel(CHANNEL_LABEL, ordered=True, negotiated=True, id=CHANNEL_ID)
        channel.bufferedAmountLowThreshold = SEND_LOW_WATER_BYTES
        session = PendingSession(self.bridge, pc, channel)
        bridge = self.bridge
        # The stream exists from the start so no message can arrive before its handler.
        stream = DataChannelStream(bridge, pc, channel, max_receive_buffer_bytes=self._max_rx)
        channel.on("message", lambda m: bridge.to_trio(stream._deliver, _as_bytes(m)))
        channel.on("close", lambda: bridge.to_trio(stream._remote_closed))

        def on_open() -> None:
            stream.path = _selected_path(pc)
            session.stream = stream
            bridge.to_trio(session.opened.set)

        def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and session.stream is None:
                session.failed = f"peer connection {pc.connectionState} before the channel opened"
                bridge.to_trio(session.opened.set)
            elif pc.connectionState in ("failed", "closed") and session.stream is not None:
                bridge.to_trio(session.stream._remote_closed)

        channel.on("open", on_open)
        pc.on("connectionstatechange", on_state)
        return session


def _as_bytes(m: bytes | str) -> bytes:
    return m.encode() if isinstance(m, str) else m


async def _make_offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())  # gathers all candidates
    return str(pc.localDescription.sdp)


async def _make_answer(pc: RTCPeerConnection, offer_sdp: str) -> str:
    from aiortc import RTCSessionDescription

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return str(pc.localDescription.sdp)


async def _apply_answer(pc: RTCPeerConnection, answer_sdp: str) -> None:
    from aiortc import RTCSessionDescription

    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))


def _selected_path(pc: Any) -> str:
    """Candidate types of the nominated ICE pair, e.g. "srflx->host" or "relay->relay".

    Reads aioice internals (aiortc exposes no getStats for the pair); "unknown"
    when the shape differs.
    """
    try:
        conn = pc.sctp.transport.transport._connection
        pairs = list(conn._nominated.values())
        pair = pairs[0]
        return f"{pair.local_candidate.type}->{pair.remote_candidate.type}"
    except Exception:
        return "unknown"


def sdp_problem(sdp: str) -> str | None:
    """Why `sdp` cannot be a data-channel offer from a Colony peer, or None.

    aiortc parses leniently (it accepted "not an sdp"); checking the lines a
    data-channel session needs refuses junk before any ICE work starts."""
    lines = sdp.splitlines()
    if not lines or lines[0].strip() != "v=0":
        return "SDP must start with v=0"
    needed = ("m=application", "a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:")
    missing = [n for n in needed if not any(line.startswith(n) for line in lines)]
    if missing:
        return f"SDP lacks {', '.join(missing)}"
    return None


def candidate_types(sdp: str) -> list[str]:
    """Candidate types listed in an SDP (host, srflx, relay) in order: for logs/tests."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if "typ" in parts:
                out.append(parts[parts.index("typ") + 1])
    return out


async def connect_pair(
    a: WebRtcEndpoint, b: WebRtcEndpoint, timeout_s: float = 20.0
) -> tuple[DataChannelStream, DataChannelStream]:
    """Two endpoints in one process, SDP passed by hand: for benchmarks and tests."""
    offer, sa = await a.offer()
    answer, sb = await b.answer(offer)
    await a.complete(sa, answer)
    async with trio.open_nursery() as n:
        out: dict[str, DataChannelStream] = {}

        async def wait(name: str, s: PendingSession) -> None:
            out[name] = await s.wait_open(timeout_s)

        n.start_soon(wait, "a", sa)
        n.start_soon(wait, "b", sb)
    return out["a"], out["b"]


def describe(streams: Iterable[DataChannelStream]) -> list[str]:
    return [s.path for s in streams]


class LazyEndpoint:
    """A WebRtcEndpoint whose bridge thread (and the aiortc import, ~50 MiB RSS) starts
    on the first offer or answer: a daemon that never needs WebRTC never pays for it
    (the edge profile's memory budget)."""

    def __init__(self, ice: IceConfig | None = None) -> None:
        self.ice = ice or IceConfig()
        self._bridge: AsyncioBridge | None = None
        self._endpoint: WebRtcEndpoint | None = None

    @property
    def started(self) -> bool:
        return self._bridge is not None

    def _get(self) -> WebRtcEndpoint:
        if self._endpoint is None:
            self._bridge = AsyncioBridge()
            self._bridge.start()
            self._endpoint = WebRtcEndpoint(self._bridge, self.ice)
        return self._endpoint

    async def offer(self) -> tuple[str, PendingSession]:
        return await self._get().offer()

    async def answer(self, offer_sdp: str) -> tuple[str, PendingSession]:
        problem = sdp_problem(offer_sdp)  # junk is refused before the bridge starts
        if problem:
            raise WebRtcError(f"bad offer: {problem}")
        return await self._get().answer(offer_sdp)

    async def complete(self, session: PendingSession, answer_sdp: str) -> None:
        await self._get().complete(session, answer_sdp)

    def close(self) -> None:
        if self._bridge is not None:
            self._bridge.stop()
