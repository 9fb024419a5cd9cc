"""Noise XX with libp2p payloads: two handshake state machines back to back."""

from __future__ import annotations

import pytest

from overlay.core.crypto import KeyPair
from overlay.p2p import noise
from overlay.p2p.errors import DecryptError, HandshakeError


def _run(init: noise.Handshake, resp: noise.Handshake) -> None:
    for writer, reader in ((init, resp), (resp, init), (init, resp)):
        framed = writer.write_message()
        assert int.from_bytes(framed[:2], "big") == len(framed) - 2
        reader.read_message(framed[2:])


def test_handshake_authenticates_both_peers_and_keys_match() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    init = noise.Handshake(True, a.seed, expected_peer=b.peer_id)
    resp = noise.Handshake(False, b.seed)
    _run(init, resp)
    assert init.complete and resp.complete
    peer_b, ca = init.result()
    peer_a, cb = resp.result()
    assert peer_b == b.peer_id and peer_a == a.peer_id
    for msg in (b"", b"x", bytes(range(256)) * 300):
        wire = noise.encrypt_frames(ca.send, msg)
        out = noise.FrameReader(cb.recv).feed_and_decrypt(wire)
        assert b"".join(out) == msg
    back = noise.encrypt_frames(cb.send, b"reply")
    assert noise.FrameReader(ca.recv).feed_and_decrypt(back) == [b"reply"]


def test_large_writes_become_few_max_size_messages() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    init, resp = noise.Handshake(True, a.seed), noise.Handshake(False, b.seed)
    _run(init, resp)
    _, ca = init.result()
    _, cb = resp.result()
    data = bytes(1_000_000)
    wire = noise.encrypt_frames(ca.send, data)
    n_msgs = -(-len(data) // noise.MAX_PLAINTEXT_BYTES)
    assert len(wire) == len(data) + n_msgs * (2 + noise.TAG_BYTES)
    reader = noise.FrameReader(cb.recv)
    got: list[bytes] = []
    for i in range(0, len(wire), 7777):  # arbitrary TCP segmentation
        got += reader.feed_and_decrypt(wire[i : i + 7777])
    assert len(got) == n_msgs and b"".join(got) == data
    assert reader.buffered_bytes == 0


def _seal(cipher: noise.CipherState, pieces: list[bytes | memoryview]) -> bytes:
    buf = bytearray(noise.sealed_bytes_max(pieces))
    return bytes(buf[: noise.seal_into(cipher, pieces, buf)])


def _plain_sizes(wire: bytes) -> list[int]:
    """The plaintext size of each framed message on `wire`."""
    out, at = [], 0
    while at < len(wire):
        n = int.from_bytes(wire[at : at + 2], "big")
        out.append(n - noise.TAG_BYTES)
        at += 2 + n
    return out


def _expected_sizes(sizes: list[int]) -> list[int]:
    """The packing rule on sizes alone: small pieces gather into the next message; a
    gathered run of at most SMALL_SEAL_BYTES before a piece of a full message or more
    goes out alone, a larger one is topped up from that piece; full messages straight
    from a piece; at least one message."""
    full, out, pending = noise.MAX_PLAINTEXT_BYTES, [], 0
    for n in sizes:
        if pending + n <= full:
            pending += n
            continue
        if pending:
            if pending <= noise.SMALL_SEAL_BYTES and n >= full:
                out.append(pending)
            else:
                out.append(full)
                n -= full - pending
            pending = 0
        out += [full] * (n // full)
        pending = n % full
    return [*out, pending] if pending or not out else out


def test_yamux_frames_are_sealed_without_copying_their_payload_twice() -> None:
    """Header + 256 KiB frames, as a bulk Yamux sender queues them: the few gathered
    bytes before each payload go out as a short message of their own, the payload
    as full messages straight from its memory; the peer reads the same bytes."""
    a, b = KeyPair.generate(), KeyPair.generate()
    init, resp = noise.Handshake(True, a.seed), noise.Handshake(False, b.seed)
    _run(init, resp)
    _, ca = init.result()
    _, cb = resp.result()
    frame = 256 * 1024
    pieces: list[bytes | memoryview] = []
    for i in range(3):
        pieces.append(bytes([i]) * 12)  # a Yamux header
        pieces.append(memoryview(bytes(range(256)) * (frame // 256)))
    pieces.append(b"\x09" * 12)  # small pieces only: gathered as before
    pieces.append(b"\x0a" * 100)
    wire = _seal(ca.send, pieces)
    plain_sizes = _plain_sizes(wire)
    full = frame // noise.MAX_PLAINTEXT_BYTES
    tail = frame - full * noise.MAX_PLAINTEXT_BYTES
    assert plain_sizes == ([12] + [noise.MAX_PLAINTEXT_BYTES] * full
                           + [tail + 12] + [noise.MAX_PLAINTEXT_BYTES] * full
                           + [tail + 12] + [noise.MAX_PLAINTEXT_BYTES] * full
                           + [tail + 112])
    got = noise.FrameReader(cb.recv).feed_and_decrypt(wire)
    assert b"".join(got) == b"".join(bytes(p) for p in pieces)
    # A gathered run above SMALL_SEAL_BYTES is still topped up to a full message.
    big_head = bytes(noise.SMALL_SEAL_BYTES + 1)
    wire = _seal(ca.send, [big_head, bytes(frame)])
    assert _plain_sizes(wire)[0] == noise.MAX_PLAINTEXT_BYTES
    got = noise.FrameReader(cb.recv).feed_and_decrypt(wire)
    assert b"".join(got) == big_head + bytes(frame)



@pytest.mark.parametrize("sizes", [[], [0], [5], [12, 256 * 1024, 12, 256 * 1024, 12, 100],
                                   [noise.SMALL_SEAL_BYTES + 1, 256 * 1024],
                                   [noise.MAX_PLAINTEXT_BYTES], [noise.MAX_PLAINTEXT_BYTES + 1],
                                   [3] * 40 + [70_000, 1, 2 * noise.MAX_PLAINTEXT_BYTES]])
def test_seal_into_packs_by_the_rule_and_a_reused_buffer_changes_nothing(
        sizes: list[int]) -> None:
    """The send path seals into a reused buffer (`seal_into`): messages of the sizes
    the packing rule gives (`_expected_sizes`), within `sealed_bytes_max`, byte for
    byte what a fresh buffer gets at the same nonces (stale bytes past the end are
    never sent), and the peer reads the pieces back."""
    key = bytes(range(32))
    pieces: list[bytes | memoryview] = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    a, b = noise.CipherState(key), noise.CipherState(key)
    buf = bytearray(b"\xee" * (noise.sealed_bytes_max(pieces) + 7))
    for _ in range(2):  # the second batch reuses the buffer, with the next nonces
        start = b.n
        n = noise.seal_into(b, pieces, buf)
        assert n <= noise.sealed_bytes_max(pieces)
        assert bytes(buf[:n]) == _seal(a, pieces)
        assert _plain_sizes(bytes(buf[:n])) == _expected_sizes(sizes)
    c = noise.CipherState(key)
    c.n = start
    got = noise.FrameReader(c).feed_and_decrypt(bytes(buf[:n]))
    assert b"".join(got) == b"".join(bytes(p) for p in pieces)

def test_wrong_expected_peer_is_refused() -> None:
    a, b, c = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    init = noise.Handshake(True, a.seed, expected_peer=c.peer_id)
    resp = noise.Handshake(False, b.seed)
    init_msg = init.write_message()
    resp.read_message(init_msg[2:])
    with pytest.raises(HandshakeError, match="dialled"):
        init.read_message(resp.write_message()[2:])


def test_tampered_handshake_and_transport_messages_fail_cleanly() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    init, resp = noise.Handshake(True, a.seed), noise.Handshake(False, b.seed)
    resp.read_message(init.write_message()[2:])
    msg2 = bytearray(resp.write_message()[2:])
    msg2[40] ^= 1  # inside the encrypted static key
    with pytest.raises(HandshakeError):
        init.read_message(bytes(msg2))

    init, resp = noise.Handshake(True, a.seed), noise.Handshake(False, b.seed)
    _run(init, resp)
    _, ca = init.result()
    _, cb = resp.result()
    wire = bytearray(noise.encrypt_frames(ca.send, b"secret"))
    wire[5] ^= 0x80
    with pytest.raises(DecryptError):
        noise.FrameReader(cb.recv).feed_and_decrypt(bytes(wire))


def test_payload_signed_by_another_identity_is_refused() -> None:
    a, b, mallory = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    resp = noise.Handshake(False, b.seed)
    # Mallory signs someone else's static key: the signature cannot verify.
    resp._payload = noise.encode_payload(mallory.seed, b"\x01" * 32)
    init = noise.Handshake(True, a.seed)
    resp.read_message(init.write_message()[2:])
    with pytest.raises(HandshakeError, match="signature"):
        init.read_message(resp.write_message()[2:])


def test_out_of_order_use_is_an_error() -> None:
    init = noise.Handshake(True, KeyPair.generate().seed)
    with pytest.raises(HandshakeError):
        init.read_message(b"\x00" * 32)
    with pytest.raises(HandshakeError):
        init.result()


def _recv_ring(reader: noise.FrameReader, wire: bytes, step: int) -> bytes:
    """Feed `wire` to the ring path in reads of at most `step` bytes, as a socket
    would (`recv_into` fills at most the free space it is given)."""
    out = bytearray()
    pos = 0
    while pos < len(wire):
        buf = reader.recv_buffer()
        n = min(step, len(buf), len(wire) - pos)
        buf[:n] = wire[pos : pos + n]
        pos += n
        plain = reader.decrypt_received(n)
        if plain is not None:
            assert plain.readonly
            out += plain
    return bytes(out)


@pytest.mark.parametrize(("step", "size"), [
    (1, 140_000), (7777, 3 << 20), (65_537, 3 << 20), (300_000, 3 << 20), (1 << 20, 3 << 20)])
def test_ring_reads_give_the_same_plaintext_whatever_the_segmentation(
        step: int, size: int) -> None:
    """The connection's socket path (`recv_buffer` / `decrypt_received`): 3 MiB of
    messages through the 1 MiB ring, wrapping it several times, with a message
    split at every kind of boundary (byte by byte: a smaller stream); nothing left
    over at the end."""
    a, b = KeyPair.generate(), KeyPair.generate()
    init, resp = noise.Handshake(True, a.seed), noise.Handshake(False, b.seed)
    _run(init, resp)
    _, ca = init.result()
    _, cb = resp.result()
    data = (bytes(range(251)) * (size // 251 + 1))[:size]  # not a multiple of a message
    wire = b"".join([noise.encrypt_frames(ca.send, b""),  # an empty message too
                     noise.encrypt_frames(ca.send, data)])
    reader = noise.FrameReader(cb.recv)
    # A partial message held by `feed_and_decrypt` (the handshake's leftover) is
    # taken over by the ring.
    head = reader.feed_and_decrypt(wire[:5])
    assert head == [] and reader.buffered_bytes == 5
    assert _recv_ring(reader, wire[5:], step) == data


def test_ring_refuses_a_tampered_or_short_message() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    init, resp = noise.Handshake(True, a.seed), noise.Handshake(False, b.seed)
    _run(init, resp)
    _, ca = init.result()
    _, cb = resp.result()
    wire = bytearray(noise.encrypt_frames(ca.send, b"x" * 1000))
    wire[500] ^= 1
    with pytest.raises(DecryptError):
        _recv_ring(noise.FrameReader(cb.recv), bytes(wire), 4096)
    with pytest.raises(DecryptError):  # a length below the tag's 16 bytes
        _recv_ring(noise.FrameReader(cb.recv), b"\x00\x05hello", 4096)
