"""Yamux sessions wired back to back (no sockets): streams, windows, close, reset,
ping, go-away and the protocol errors that end a session."""

from __future__ import annotations

import pytest

from overlay.p2p import yamux
from overlay.p2p.errors import MuxerError


def pump(src: yamux.Session, dst: yamux.Session) -> list[yamux.Event]:
    return dst.receive_data(b"".join(bytes(p) for p in src.take_outbound()))


def pair() -> tuple[yamux.Session, yamux.Session]:
    return yamux.Session(client=True), yamux.Session(client=False)


def test_open_send_fin_and_ids() -> None:
    c, s = pair()
    sid = c.open_stream()
    assert sid == 1 and c.open_stream() == 3
    assert c.send(sid, b"hello") == 5
    events = pump(c, s)
    # Frames keep their order: both SYNs went out before the data.
    assert events == [yamux.StreamOpened(1), yamux.StreamOpened(3),
                      yamux.DataReceived(1, b"hello")]
    pump(s, c)  # ACKs
    s_sid = s.open_stream()
    assert s_sid == 2
    c.close_stream(sid)
    assert pump(c, s) == [yamux.StreamEnded(1)]
    assert pump(s, c) == [yamux.StreamOpened(2)]
    with pytest.raises(MuxerError, match="closed for writing"):
        c.send(sid, b"more")


def test_send_window_limits_and_grows_as_the_reader_drains() -> None:
    c, s = pair()
    sid = c.open_stream()
    big = bytes(4 * 1024 * 1024)
    sent = c.send(sid, big)
    assert sent == yamux.INITIAL_WINDOW  # the spec's 256 KiB, no more
    assert c.send(sid, big) == 0
    received = sum(len(e.data) for e in pump(c, s) if isinstance(e, yamux.DataReceived))
    assert received == sent
    s.consumed(sid, received)
    events = pump(s, c)
    assert yamux.SendWindowOpened(sid) in events
    # Half the window was returned, plus growth: the window doubled.
    assert c.send_window(sid) == 2 * yamux.INITIAL_WINDOW
    # Keep draining: the window grows to the cap and no further.
    for _ in range(12):
        n = c.send(sid, big)
        got = sum(len(e.data) for e in pump(c, s) if isinstance(e, yamux.DataReceived))
        assert got == n
        s.consumed(sid, got)
        pump(s, c)
    assert s._streams[sid].recv_size == yamux.DEFAULT_MAX_WINDOW
    assert c.send_window(sid) <= yamux.DEFAULT_MAX_WINDOW


def test_data_frames_are_capped_for_interleaving() -> None:
    c, _ = pair()
    sid = c.open_stream()
    c._streams[sid].send_window = 10**6
    c.take_outbound()
    c.send(sid, bytes(600_000))
    headers = [p for p in c.take_outbound() if len(p) == yamux.HEADER_BYTES]
    assert len(headers) == 3  # 256 KiB + 256 KiB + rest


def test_reset_ping_go_away() -> None:
    c, s = pair()
    sid = c.open_stream()
    pump(c, s)
    pump(s, c)
    s.reset_stream(sid)
    assert pump(s, c) == [yamux.StreamReset(sid)]
    with pytest.raises(MuxerError, match="gone"):
        c.send(sid, b"x")
    c.ping(42)
    assert pump(c, s) == []
    assert pump(s, c) == [yamux.PingAcked(42)]
    s.go_away()
    assert pump(s, c) == [yamux.GoAwayReceived(yamux.GO_AWAY_NORMAL)]
    with pytest.raises(MuxerError, match="going away"):
        c.open_stream()


def test_late_frames_for_a_reset_stream_are_ignored() -> None:
    c, s = pair()
    sid = c.open_stream()
    pump(c, s)
    c.send(sid, b"in flight")
    s.reset_stream(sid)  # s resets before it sees the data
    assert pump(c, s) == []
    assert s.stream_count == 0


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (yamux.HEADER.pack(1, 0, 0, 1, 0), "version"),
        (yamux.HEADER.pack(0, 9, 0, 1, 0), "unknown yamux frame type"),
        (yamux.HEADER.pack(0, 0, 0, 0, 0), "stream 0"),
        (yamux.HEADER.pack(0, 1, yamux.FLAG_SYN, 2, 0), "parity"),
        (yamux.HEADER.pack(0, 0, 0, 1, 2**31), "exceeds any window"),
    ],
)
def test_protocol_errors(frame: bytes, match: str) -> None:
    s = yamux.Session(client=False)
    with pytest.raises(MuxerError, match=match):
        s.receive_data(frame)


def test_data_beyond_the_window_is_a_protocol_error() -> None:
    c, s = pair()
    sid = c.open_stream()
    pump(c, s)
    c._streams[sid].send_window = 10**7  # a peer ignoring our window
    c.send(sid, bytes(yamux.INITIAL_WINDOW + 1))
    with pytest.raises(MuxerError, match="window left"):
        pump(c, s)


def test_too_many_streams_are_refused_not_fatal() -> None:
    c = yamux.Session(client=True)
    s = yamux.Session(client=False, max_streams=2)
    for _ in range(3):
        c.open_stream()
    events = pump(c, s)
    assert events == [yamux.StreamOpened(1), yamux.StreamOpened(3)]
    assert s.streams_refused == 1
    assert yamux.StreamReset(5) in pump(s, c)
