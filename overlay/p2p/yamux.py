"""Yamux (`/yamux/1.0.0`, hashicorp/yamux spec.md as libp2p uses it), sans-IO.

A `Session` is one side of a multiplexed connection. Feed it what the peer sent
(`receive_data` → events), tell it what the application does (`open_stream`,
`send`, `consumed`, `close_stream`, `reset_stream`, `ping`, `go_away`) and take
the bytes to send with `take_outbound()`. It never blocks and never reads a
clock; the trio driver is overlay.p2p.connection.

Frame: 12-byte header `version(0) type flags(u16) stream_id(u32) length(u32)`,
big-endian; types Data (length = payload bytes), WindowUpdate (length = window
delta), Ping (length = opaque value, stream 0), GoAway (length = error code).
Flags SYN/ACK open and accept a stream, FIN half-closes it, RST aborts it. The
dialler (client) uses odd stream ids, the listener even ones.

Flow control: every stream starts with the spec's 256 KiB window each way. As
the application drains a stream (`consumed`), credit goes back to the peer once
half the window is used, and the window doubles on each such update up to
`max_window` (16 MiB by default): a stream that is read fast grows to a window
that covers a loopback or LAN bandwidth-delay product; a stream nobody reads
stays at 256 KiB. So a session buffers at most `max_window` bytes per stream
and `max_streams` streams; receiving past the window is a protocol error.

Invariants: `send` never emits more payload than the peer's window allows;
`receive_data` either returns events or raises MuxerError (then the caller sends
`go_away(PROTOCOL_ERROR)` and closes); it never raises anything else, whatever
the bytes (property- and fuzz-tested in tests/property/test_p2p_yamux_props.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from overlay.p2p.errors import MuxerError

PROTOCOL_ID = "/yamux/1.0.0"
VERSION = 0
TYPE_DATA, TYPE_WINDOW_UPDATE, TYPE_PING, TYPE_GO_AWAY = 0, 1, 2, 3
FLAG_SYN, FLAG_ACK, FLAG_FIN, FLAG_RST = 1, 2, 4, 8
GO_AWAY_NORMAL, GO_AWAY_PROTOCOL_ERROR, GO_AWAY_INTERNAL_ERROR = 0, 1, 2
INITIAL_WINDOW = 256 * 1024
DEFAULT_MAX_WINDOW = 16 * 1024 * 1024
DEFAULT_MAX_STREAMS = 256
#: Largest Data frame we emit: big enough that headers cost nothing, small
#: enough that streams sharing a connection interleave.
MAX_DATA_FRAME = 256 * 1024
HEADER = struct.Struct(">BBHII")
HEADER_BYTES = HEADER.size
_MAX_U32 = 2**32 - 1


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened stream `sid` (we already acknowledged it)."""

    sid: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Payload bytes for `sid`: a read-only view into the received buffer."""

    sid: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed `sid` (FIN): no more data will come."""

    sid: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    sid: int


@dataclass(frozen=True, slots=True)
class SendWindowOpened:
    """The peer granted more window on `sid`: blocked writers may continue."""

    sid: int


@dataclass(frozen=True, slots=True)
class PingAcked:
    value: int


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    code: int


Event = (
    StreamOpened | DataReceived | StreamEnded | StreamReset | SendWindowOpened
    | PingAcked | GoAwayReceived
)


# ---------------------------------------------------------------- state


class _Stream:
    __slots__ = ("credit", "local_closed", "recv_left", "recv_size", "remote_closed",
                 "send_window")

    def __init__(self) -> None:
        self.send_window = INITIAL_WINDOW  # bytes the peer lets us send
        self.recv_size = INITIAL_WINDOW  # the window we currently grant
        self.recv_left = INITIAL_WINDOW  # of which not yet used by the peer
        self.credit = 0  # bytes consumed by the application, not yet granted back
        self.local_closed = False
        self.remote_closed = False


class Session:
    """One side of a Yamux session; see the module docstring."""

    def __init__(
        self,
        client: bool,
        *,
        max_window: int = DEFAULT_MAX_WINDOW,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        if max_window < INITIAL_WINDOW:
            raise ValueError("max_window must be at least the initial 256 KiB")
        self.client = client
        self.max_window = max_window
        self.max_streams = max_streams
        self._next_sid = 1 if client else 2
        self._streams: dict[int, _Stream] = {}
        self._hdr = bytearray()  # a header split across receive_data calls
        self._data_left = 0  # payload bytes of the current Data frame still to come
        self._data_sid = 0  # its stream (0: unknown or reset stream, payload dropped)
        self._data_fin = False  # its FIN flag, applied after the payload
        self._out: list[bytes | memoryview] = []
        self.outbound_bytes = 0
        self.go_away_sent = False
        self.go_away_received = False
        #: Counted, not raised: streams the peer opened beyond `max_streams` (reset).
        self.streams_refused = 0

    # ------------------------------------------------------------ output

    def _frame(self, typ: int, flags: int, sid: int, length: int) -> None:
        self._out.append(HEADER.pack(VERSION, typ, flags, sid, length))
        self.outbound_bytes += HEADER_BYTES

    def take_outbound(self) -> list[bytes | memoryview]:
        """Everything queued for the wire, in order; the queue is then empty."""
        out, self._out = self._out, []
        self.outbound_bytes = 0
        return out

    # ------------------------------------------------------------ local actions

    def open_stream(self) -> int:
        if self.go_away_sent or self.go_away_received:
            raise MuxerError("session is going away: no new streams")
        sid = self._next_sid
        if sid > _MAX_U32:
            raise MuxerError("stream ids exhausted")
        self._next_sid += 2
        self._streams[sid] = _Stream()
        self._frame(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 0)
        return sid

    def send_window(self, sid: int) -> int:
        st = self._streams.get(sid)
        return 0 if st is None or st.local_closed else st.send_window

    def is_open(self, sid: int) -> bool:
        st = self._streams.get(sid)
        return st is not None and not st.local_closed

    def send(self, sid: int, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of `data` as the peer's window allows; return that count.

        0 means: wait for SendWindowOpened. Raises MuxerError if the stream is
        closed for writing or gone (reset).
        """
        st = self._streams.get(sid)
        if st is None:
            raise MuxerError(f"stream {sid} is gone (reset or never opened)")
        if st.local_closed:
            raise MuxerError(f"stream {sid} is closed for writing")
        view = memoryview(data)
        n = min(len(view), st.send_window)
        off = 0
        while off < n:
            chunk = min(n - off, MAX_DATA_FRAME)
            self._frame(TYPE_DATA, 0, sid, chunk)
            self._out.append(view[off : off + chunk])
            self.outbound_bytes += chunk
            off += chunk
        st.send_window -= n
        return n

    def consumed(self, sid: int, n: int) -> None:
        """The application read `n` bytes of `sid`: grant window back when due."""
        st = self._streams.get(sid)
        if st is None or st.remote_closed:
            return
        st.credit += n
        if st.credit * 2 < st.recv_size:
            return
        grow = min(st.recv_size, self.max_window - st.recv_size)  # double, capped
        st.recv_size += grow
        delta = st.credit + grow
        st.credit = 0
        st.recv_left += delta
        self._frame(TYPE_WINDOW_UPDATE, 0, sid, delta)

    def close_stream(self, sid: int) -> None:
        """Half-close: FIN. Idempotent."""
        st = self._streams.get(sid)
        if st is None or st.local_closed:
            return
        st.local_closed = True
        self._frame(TYPE_WINDOW_UPDATE, FLAG_FIN, sid, 0)
        if st.remote_closed:
            del self._streams[sid]

    def reset_stream(self, sid: int) -> None:
        """Abort: RST, forget the stream. Idempotent."""
        if self._streams.pop(sid, None) is not None:
            self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0)

    def ping(self, value: int) -> None:
        self._frame(TYPE_PING, FLAG_SYN, 0, value & _MAX_U32)

    def go_away(self, code: int = GO_AWAY_NORMAL) -> None:
        if not self.go_away_sent:
            self.go_away_sent = True
            self._frame(TYPE_GO_AWAY, 0, 0, code)

    def flow_state(self, sid: int) -> dict[str, int | bool] | None:
        """Flow-control state of `sid` for diagnostics (None: gone or never opened)."""
        st = self._streams.get(sid)
        if st is None:
            return None
        return {"send_window": st.send_window, "recv_left": st.recv_left,
                "recv_size": st.recv_size, "credit": st.credit,
                "local_closed": st.local_closed, "remote_closed": st.remote_closed}

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------ input

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse what the peer sent; return the events it caused, in order.

        Data payloads are delivered as they arrive, as slices of `data` (no join,
        no copy: a 256 KiB frame spread over four Noise messages becomes four
        DataReceived events). `data` must not be mutated afterwards.
        """
        view = memoryview(data)
        events: list[Event] = []
        pos = 0
        end = len(view)
        while pos < end:
            if self._data_left:  # inside a Data frame's payload
                n = min(self._data_left, end - pos)
                if self._data_sid:
                    events.append(DataReceived(self._data_sid, view[pos : pos + n]))
                self._data_left -= n
                pos += n
                if not self._data_left:
                    self._end_data_frame(events)
                continue
            if self._hdr or end - pos < HEADER_BYTES:
                take = min(HEADER_BYTES - len(self._hdr), end - pos)
                self._hdr += view[pos : pos + take]
                pos += take
                if len(self._hdr) < HEADER_BYTES:
                    break
                header: bytes | memoryview = bytes(self._hdr)
                self._hdr.clear()
            else:
                header = view[pos : pos + HEADER_BYTES]
                pos += HEADER_BYTES
            self._on_header(events, *HEADER.unpack(header))
        return events

    def _on_header(
        self, events: list[Event], version: int, typ: int, flags: int, sid: int, length: int
    ) -> None:
        if version != VERSION:
            raise MuxerError(f"yamux version {version} (expected 0)")
        if typ == TYPE_DATA:
            if length > self.max_window:
                raise MuxerError(f"data frame of {length} bytes exceeds any window")
            self._on_stream_frame(events, typ, flags, sid, length)
        elif typ == TYPE_WINDOW_UPDATE:
            self._on_stream_frame(events, typ, flags, sid, length)
        elif typ == TYPE_PING:
            if flags & FLAG_SYN:
                self._frame(TYPE_PING, FLAG_ACK, 0, length)
            elif flags & FLAG_ACK:
                events.append(PingAcked(length))
        elif typ == TYPE_GO_AWAY:
            self.go_away_received = True
            events.append(GoAwayReceived(length))
        else:
            raise MuxerError(f"unknown yamux frame type {typ}")

    def _on_stream_frame(
        self, events: list[Event], typ: int, flags: int, sid: int, length: int
    ) -> None:
        if sid == 0:
            raise MuxerError("data or window update on stream 0")
        if typ == TYPE_DATA:
            # The payload follows; it is skipped if the stream is unknown or reset.
            self._data_left = length
            self._data_sid = 0
            self._data_fin = False
        st = self._streams.get(sid)
        if flags & FLAG_SYN:
            if st is not None:
                raise MuxerError(f"SYN for stream {sid}, which is already open")
            if (sid % 2 == 1) == self.client:
                raise MuxerError(f"peer opened stream {sid} with our id parity")
            if self.go_away_sent or len(self._streams) >= self.max_streams:
                self.streams_refused += 1
                self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0)
                return
            st = self._streams[sid] = _Stream()
            self._frame(TYPE_WINDOW_UPDATE, FLAG_ACK, sid, 0)
            events.append(StreamOpened(sid))
        if st is None:
            # A frame for a stream we reset or finished: the peer sent it before
            # it saw our RST/FIN. Not an error; its payload is dropped.
            return
        if flags & FLAG_RST:
            del self._streams[sid]
            events.append(StreamReset(sid))
            return
        if typ == TYPE_WINDOW_UPDATE:
            if length:
                if st.send_window + length > _MAX_U32:
                    raise MuxerError(f"window update overflows stream {sid}'s window")
                st.send_window += length
                events.append(SendWindowOpened(sid))
        elif length:
            if st.remote_closed:
                raise MuxerError(f"data on stream {sid} after its FIN")
            if length > st.recv_left:
                raise MuxerError(
                    f"peer sent {length} bytes on stream {sid}; window left {st.recv_left}"
                )
            st.recv_left -= length
            self._data_sid = sid
            if flags & FLAG_FIN:
                self._data_fin = True  # applied once the payload has been delivered
                return
        self._fin(events, st, sid, flags)

    def _end_data_frame(self, events: list[Event]) -> None:
        sid, fin = self._data_sid, self._data_fin
        self._data_sid = 0
        self._data_fin = False
        st = self._streams.get(sid) if sid else None
        if st is not None and fin:
            self._fin(events, st, sid, FLAG_FIN)

    def _fin(self, events: list[Event], st: _Stream, sid: int, flags: int) -> None:
        if flags & FLAG_FIN and not st.remote_closed:
            st.remote_closed = True
            events.append(StreamEnded(sid))
            if st.local_closed:
                del self._streams[sid]
