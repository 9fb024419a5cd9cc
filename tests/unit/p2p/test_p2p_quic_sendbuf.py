"""quic_credit.SendBuffer, the stream send buffer that replaces aioquic's bytearray:
for any sequence of writes (small ones gathered, large ones kept as chunks), frame
reads at any offset and acknowledged fronts cut off, it holds exactly the bytes a
bytearray under the same operations holds (aioquic's own semantics); and a stream
sender in a real aioquic connection gets one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.crypto import KeyPair
from overlay.p2p.quic import QuicEndpoint
from overlay.p2p.quic_credit import COALESCE_BYTES, SendBuffer

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
