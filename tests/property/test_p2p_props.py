"""Property and fuzz tests of the native libp2p wire (overlay/p2p).

* Yamux: whatever way the byte stream is cut, the receiver sees the same data per
  stream; the sender never exceeds the window; random bytes raise only MuxerError.
* Noise: any segmentation of transport messages decrypts to the same plaintext;
  random or flipped bytes raise only DecryptError / HandshakeError.
* protobuf, identify, multiaddr, multistream: random bytes raise only our typed
  WireErrors (a peer's garbage must never surface as IndexError or KeyError).
"""

from __future__ import annotations

from contextlib import suppress

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay.core.crypto import KeyPair
from overlay.core.errors import WireError
from overlay.p2p import identify, multiaddr, multistream, noise, pb, yamux
from overlay.p2p.errors import DecryptError, MuxerError, NegotiationError

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

_KEYS = (KeyPair.from_rng_seed(b"\x01" * 32), KeyPair.from_rng_seed(b"\x02" * 32))


def _ciphers() -> tuple[noise.CipherPair, noise.CipherPair]:
    init = noise.Handshake(True, _KEYS[0].seed, _KEYS[1].peer_id)
    resp = noise.Handshake(False, _KEYS[1].seed)
    resp.read_message(init.write_message()[2:])
    init.read_message(resp.write_message()[2:])
    resp.read_message(init.write_message()[2:])
    return init.result()[1], resp.result()[1]


def _cuts(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


@SETTINGS
@given(
    writes=st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=70_000)), max_size=12),
    cuts=st.lists(st.integers(0, 10**7), max_size=20),
)
def test_yamux_data_survives_any_segmentation(
    writes: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    c, s = yamux.Session(client=True), yamux.Session(client=False)
    sids = [c.open_stream() for _ in range(3)]
    sent: dict[int, bytearray] = {sid: bytearray() for sid in sids}
    for which, data in writes:
        sid = sids[which]
        n = c.send(sid, data)
        assert n <= len(data)
        sent[sid] += data[:n]
    wire = b"".join(bytes(p) for p in c.take_outbound())
    got: dict[int, bytearray] = {sid: bytearray() for sid in sids}
    for piece in _cuts(wire, cuts):
        for ev in s.receive_data(piece):
            if isinstance(ev, yamux.DataReceived):
                got[ev.sid] += ev.data
    assert got == sent
    # Never more than the initial window unacknowledged on any stream.
    assert all(len(v) <= yamux.INITIAL_WINDOW for v in sent.values())


@SETTINGS
@given(data=st.binary(max_size=4096), cuts=st.lists(st.integers(0, 4096), max_size=8))
def test_yamux_random_bytes_raise_only_muxer_error(data: bytes, cuts: list[int]) -> None:
    s = yamux.Session(client=False, max_streams=8)
    with suppress(MuxerError):
        for piece in _cuts(data, cuts):
            s.receive_data(piece)
    assert s.stream_count <= 8


@SETTINGS
@given(headers=st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 15), st.integers(0, 8), st.integers(0, 2**20)),
    max_size=30,
))
def test_yamux_random_valid_headers_raise_only_muxer_error(
    headers: list[tuple[int, int, int, int]]
) -> None:
    """Well-formed headers with hostile flags, ids and lengths (payload included)."""
    s = yamux.Session(client=True)
    wire = bytearray()
    for typ, flags, sid, length in headers:
        wire += yamux.HEADER.pack(0, typ, flags, sid, length)
        if typ == yamux.TYPE_DATA:
            wire += bytes(min(length, 1000))
    with suppress(MuxerError):
        s.receive_data(bytes(wire))


@SETTINGS
@given(msgs=st.lists(st.binary(max_size=100_000), max_size=5),
       cuts=st.lists(st.integers(0, 10**6), max_size=20))
def test_noise_transport_any_segmentation(msgs: list[bytes], cuts: list[int]) -> None:
    a, b = _ciphers()
    wire = b"".join(noise.encrypt_frames(a.send, m) for m in msgs)
    reader = noise.FrameReader(b.recv)
    out = []
    for piece in _cuts(wire, cuts):
        out += reader.feed_and_decrypt(piece)
    assert b"".join(out) == b"".join(msgs)


@SETTINGS
@given(data=st.binary(min_size=1, max_size=2000), flip=st.integers(0, 10**6))
def test_noise_garbage_and_bit_flips_raise_only_decrypt_error(data: bytes, flip: int) -> None:
    a, b = _ciphers()
    with suppress(DecryptError):
        noise.FrameReader(b.recv).feed_and_decrypt(data)
    wire = bytearray(noise.encrypt_frames(a.send, data))
    wire[2 + flip % (len(wire) - 2)] ^= 1 << (flip % 8)
    try:
        noise.FrameReader(b.recv).feed_and_decrypt(bytes(wire))
        raise AssertionError("a flipped bit went unnoticed")
    except DecryptError:
        pass


@SETTINGS
@given(msg=st.binary(max_size=300), step=st.integers(0, 2))
def test_noise_handshake_garbage_raises_only_wire_errors(msg: bytes, step: int) -> None:
    init = noise.Handshake(True, _KEYS[0].seed)
    resp = noise.Handshake(False, _KEYS[1].seed)
    with suppress(WireError):
        if step == 0:
            resp.read_message(msg)
        elif step == 1:
            init.write_message()
            init.read_message(msg)
        else:
            resp.read_message(init.write_message()[2:])
            resp.write_message()
            resp.read_message(msg)


@SETTINGS
@given(data=st.binary(max_size=500))
def test_decoders_raise_only_wire_errors(data: bytes) -> None:
    for decode in (pb.decode, identify.decode, multiaddr.from_bytes):
        with suppress(WireError):
            decode(data)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.written = bytearray()

    async def read_exact(self, n: int) -> bytes:
        if len(self.data) < n:
            raise NegotiationError("eof")
        out, self.data = self.data[:n], self.data[n:]
        await trio.lowlevel.checkpoint()
        return out

    async def write(self, data: bytes) -> None:
        self.written += data
        await trio.lowlevel.checkpoint()


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_multistream_garbage_raises_only_negotiation_error(data: bytes) -> None:
    async def main() -> None:
        for role in ("dialer", "listener"):
            io = _Bytes(multistream.encode(multistream.HEADER) + data)
            with suppress(WireError):
                if role == "dialer":
                    await multistream.select_dialer(io, ["/a/1"])
                else:
                    await multistream.select_listener(io, ["/a/1"])

    trio.run(main)
