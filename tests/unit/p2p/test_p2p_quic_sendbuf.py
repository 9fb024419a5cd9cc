"""quic_credit.SendBuffer, the stream send buffer that replaces aioquic's bytearray:
for any sequence of writes (small ones gathered, large ones kept as chunks), frame
reads at any offset and acknowledged fronts cut off, it holds exactly the bytes a
bytearray under the same operations holds (aioquic's own semantics); a stream
sender in a real aioquic connection gets one; and datagrams above aioquic's 16 KiB
frame limit (several frames, or one without a length field) carry a stream intact."""

from __future__ import annotations

import pytest
from aioquic._buffer import Buffer
from aioquic.quic import events
from aioquic.quic.packet import pull_quic_header
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.crypto import KeyPair
from overlay.p2p.quic import QuicEndpoint
from overlay.p2p.quic_credit import COALESCE_BYTES, Libp2pQuicConnection, SendBuffer

_SIZES = st.one_of(st.integers(0, 300), st.integers(COALESCE_BYTES - 10, 3 * COALESCE_BYTES))
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), _SIZES),
        st.tuples(st.just("read"), st.floats(0, 1), st.integers(0, 20000)),
        st.tuples(st.just("ack"), st.floats(0, 1)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_send_buffer_matches_a_bytearray(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    model = bytearray()
    buf = SendBuffer()
    counter = 0
    for op in ops:
        if op[0] == "write":
            data = bytes((counter + i) % 251 for i in range(op[1]))
            counter += op[1]
            model += data
            buf += data
        elif op[0] == "read":
            start = int(op[1] * len(model))
            stop = min(len(model), start + op[2])
            assert bytes(buf[start:stop]) == bytes(model[start:stop])
        else:
            n = int(op[1] * len(model))
            del model[:n]
            del buf[:n]
        assert len(buf) == len(model)
    assert bytes(buf[0:len(buf)]) == bytes(model)


def test_send_buffer_deletes_from_the_front_only() -> None:
    buf = SendBuffer(b"abcdef")
    try:
        del buf[2:4]
    except ValueError:
        pass
    else:
        raise AssertionError("a middle delete must be refused")
    assert bytes(buf[0:6]) == b"abcdef"


def test_streams_of_our_connection_send_from_a_send_buffer() -> None:
    ep = QuicEndpoint(KeyPair.from_rng_seed(b"s" * 32), pmtud=False)
    quic = ep._connection(True, ("127.0.0.1", 9))
    sid = quic.get_next_available_stream_id()
    quic.send_stream_data(sid, b"hello")
    sender = quic._streams[sid].sender
    assert isinstance(sender._buffer, SendBuffer)
    frame = sender.get_frame(100)
    assert frame is not None and frame.data == b"hello"


def _pair() -> tuple[Libp2pQuicConnection, Libp2pQuicConnection, float]:
    """Our client and server connections back to back in memory, handshake done."""
    a = QuicEndpoint(KeyPair.from_rng_seed(b"a" * 32), pmtud=False, max_datagram_size=16384)
    b = QuicEndpoint(KeyPair.from_rng_seed(b"b" * 32), pmtud=False, max_datagram_size=16384)
    client = a._connection(True, _SERVER)
    now = 1.0
    client.connect(_SERVER, now=now)
    first = client.datagrams_to_send(now=now)
    header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
    server = b._connection(False, _CLIENT,
                           original_destination_connection_id=header.destination_cid)
    for data, _ in first:
        server.receive_datagram(data, _CLIENT, now=now)
    for _ in range(10):
        now += 0.01
        _shuttle(server, client, _SERVER, now)
        _shuttle(client, server, _CLIENT, now)
    assert client._handshake_confirmed
    return client, server, now


_CLIENT, _SERVER = ("127.0.0.1", 1), ("127.0.0.1", 2)


def _unacked(quic: Libp2pQuicConnection, sid: int) -> int:
    stream = quic._streams.get(sid)
    return 0 if stream is None else int(stream.sender._buffer_stop - stream.sender._buffer_start)


def _shuttle(src: Libp2pQuicConnection, dst: Libp2pQuicConnection,
             addr: tuple[str, int], now: float) -> list[int]:
    sizes = []
    for data, _ in src.datagrams_to_send(now=now):
        dst.receive_datagram(data, addr, now=now)
        sizes.append(len(data))
    return sizes


@pytest.mark.parametrize("size", [16384, 40000, 65000])
def test_large_datagrams_carry_every_byte_in_order(size: int) -> None:
    """Above 16 KiB a packet holds one length-less STREAM frame (or several framed
    ones): 3 MiB in 100,003-byte writes arrive whole, in order, with the FIN."""
    client, server, now = _pair()
    client._set_datagram_size(size)
    payload = bytes(i * 7 % 251 for i in range(3 * 1024 * 1024))
    sid = client.get_next_available_stream_id()
    client.consumed[sid] = 0
    got = bytearray()
    end = False
    sent = 0
    largest = 0
    for _ in range(10_000):
        if sent < len(payload) and _unacked(client, sid) < 1 << 20:
            chunk = payload[sent:sent + 100_003]
            sent += len(chunk)
            client.send_stream_data(sid, chunk, end_stream=sent == len(payload))
        now += 0.002
        largest = max([largest, *_shuttle(client, server, _CLIENT, now)])
        while (ev := server.next_event()) is not None:
            if isinstance(ev, events.StreamDataReceived):
                got += ev.data
                server.consumed[sid] = server.consumed.get(sid, 0) + len(ev.data)
                end = end or ev.end_stream
        _shuttle(server, client, _SERVER, now)
        if end:
            break
    assert end and bytes(got) == payload
    assert size - 100 < largest <= size
