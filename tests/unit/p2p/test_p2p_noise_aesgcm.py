"""The AES-GCM Noise suite (`Noise_XX_25519_AESGCM_SHA256`, `/colony/noise-aesgcm/1.0.0`):
its nonce layout against pyca's AESGCM, counter limits, the handshake both ways,
interop with an independent Noise implementation (noiseprotocol, when installed),
tampering, and the choice of suites (`[network] noise_cipher`, the CPU flags)."""

from __future__ import annotations

import hashlib
import os

import nacl.bindings
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from overlay.core.crypto import KeyPair
from overlay.p2p import noise, noise_cipher
from overlay.p2p.errors import DecryptError, HandshakeError
from overlay.p2p.noise_cipher import AESGCM_SUITE, CHACHA
from overlay.runtime.net import noise_choice

KEY = bytes(range(32))


def _run(init: noise.Handshake, resp: noise.Handshake) -> None:
    for writer, reader in ((init, resp), (resp, init), (init, resp)):
        reader.read_message(writer.write_message()[2:])


def _pair(suite: noise.NoiseSuite = AESGCM_SUITE) -> tuple[noise.CipherPair, noise.CipherPair]:
    a, b = KeyPair.generate(), KeyPair.generate()
    init = noise.Handshake(True, a.seed, b.peer_id, suite=suite)
    resp = noise.Handshake(False, b.seed, suite=suite)
    _run(init, resp)
    (peer_b, ca), (peer_a, cb) = init.result(), resp.result()
    assert peer_b == b.peer_id and peer_a == a.peer_id
    return ca, cb


@pytest.mark.parametrize(("n", "nonce_hex"), [
    (0, "000000000000000000000000"),
    (1, "000000000000000000000001"),
    (0x0102030405, "000000000000000102030405"),
])
def test_aesgcm_nonce_is_the_counter_big_endian(n: int, nonce_hex: str) -> None:
    """Noise §12.4: 32 zero bits, then n as 64 bits big-endian (ChaChaPoly's is
    little-endian, §12.3): the same bytes pyca's AESGCM gives with that nonce."""
    nonce = bytes.fromhex(nonce_hex)
    cs = noise.AesGcmCipherState(KEY)
    assert cs.nonce(n) == nonce
    cs.n = n
    ct = cs.encrypt(b"attack at dawn", b"ad")
    assert ct == AESGCM(KEY).encrypt(nonce, b"attack at dawn", b"ad")
    assert cs.n == n + 1
    out = memoryview(bytearray(14 + noise.TAG_BYTES))
    cs.n = n
    cs.encrypt_into(b"attack at dawn", out)
    assert bytes(out) == AESGCM(KEY).encrypt(nonce, b"attack at dawn", None)
    back = noise.AesGcmCipherState(KEY)
    back.n = n
    plain = memoryview(bytearray(14))
    back.decrypt_into(bytes(out), plain)
    assert bytes(plain) == b"attack at dawn"
    big = 0x0102030405060708
    assert cs.nonce(big) == bytes.fromhex("000000000102030405060708")
    assert noise.CipherState(KEY).nonce(big) == bytes.fromhex("000000000807060504030201")
    # ChaCha keeps libp2p's little-endian layout (unchanged wire for /noise).
    chacha = noise.CipherState(KEY)
    chacha.n = n
    little = b"\0\0\0\0" + n.to_bytes(8, "little")
    assert chacha.encrypt(b"x") == ChaCha20Poly1305(KEY).encrypt(little, b"x", None)


@pytest.mark.parametrize("cls", [noise.CipherState, noise.AesGcmCipherState])
def test_counter_exhaustion_refuses_without_reusing_a_nonce(
        cls: type[noise.CipherState]) -> None:
    """The last message a key may protect goes through; the next is refused (the
    session is dead: libp2p has no rekey), encrypting and decrypting alike, and the
    counter does not move."""
    send, recv = cls(KEY), cls(KEY)
    send.n = recv.n = cls.MAX_MESSAGES - 1
    assert recv.decrypt(send.encrypt(b"last")) == b"last"
    assert send.n == cls.MAX_MESSAGES
    for op in (lambda: send.encrypt(b"one more"),
               lambda: send.encrypt_into(b"x", memoryview(bytearray(17))),
               lambda: recv.decrypt(bytes(32))):
        with pytest.raises(DecryptError, match="exhausted"):
            op()
    assert send.n == recv.n == cls.MAX_MESSAGES
    # AES-GCM stops at 2^40 messages: < 2^56 bytes per key (Noise §14).
    assert noise.AesGcmCipherState.MAX_MESSAGES * noise.MAX_MESSAGE_BYTES < 2**56


def test_symmetric_state_starts_from_the_zero_padded_name() -> None:
    """Noise §5.2: a protocol name of at most 32 bytes is h itself, zero-padded
    (AESGCM's is 28 bytes; ChaChaPoly's exactly 32), and ck = h."""
    sym = noise._Symmetric(AESGCM_SUITE)
    assert sym.ck == b"Noise_XX_25519_AESGCM_SHA256\0\0\0\0"
    assert sym.h == hashlib.sha256(sym.ck).digest()  # the empty prologue mixed in
    assert noise._Symmetric(CHACHA).ck == noise.PROTOCOL_NAME


@pytest.mark.parametrize("initiator_first", [True, False])
def test_aesgcm_handshake_and_transport_both_ways(initiator_first: bool) -> None:
    ca, cb = _pair()
    assert isinstance(ca.send, noise.AesGcmCipherState)
    senders = [(ca.send, cb.recv), (cb.send, ca.recv)]
    if not initiator_first:
        senders.reverse()
    for send, recv in senders:
        for msg in (b"", b"x", bytes(range(256)) * 1000):  # 256 KB: several messages
            wire = noise.encrypt_frames(send, msg)
            assert b"".join(noise.FrameReader(recv).feed_and_decrypt(wire)) == msg
        pieces: list[bytes | memoryview] = [b"h" * 12, bytes(300_000), b"t" * 12]
        buf = bytearray(noise.sealed_bytes_max(pieces))
        n = noise.seal_into(send, pieces, buf)
        reader = noise.FrameReader(recv)
        ring = reader.recv_buffer()
        ring[:n] = buf[:n]
        plain = reader.decrypt_received(n)
        assert plain is not None and bytes(plain) == b"".join(bytes(p) for p in pieces)


def test_the_suites_derive_different_keys() -> None:
    """The protocol name goes into h and ck: a responder in the other suite cannot
    read the initiator's second message (nor could a downgrade be spliced in)."""
    a, b = KeyPair.generate(), KeyPair.generate()
    init = noise.Handshake(True, a.seed, suite=AESGCM_SUITE)
    resp = noise.Handshake(False, b.seed, suite=CHACHA)
    resp.read_message(init.write_message()[2:])  # -> e: nothing encrypted yet
    with pytest.raises(HandshakeError, match="authentication"):
        init.read_message(resp.write_message()[2:])


def test_tampered_aesgcm_messages_fail_cleanly() -> None:
    ca, cb = _pair()
    wire = bytearray(noise.encrypt_frames(ca.send, b"secret" * 100))
    wire[40] ^= 0x01  # a ciphertext byte
    with pytest.raises(DecryptError, match="authentication"):
        noise.FrameReader(cb.recv).feed_and_decrypt(bytes(wire))
    ca, cb = _pair()
    wire = bytearray(noise.encrypt_frames(ca.send, b"secret"))
    wire[-1] ^= 0x80  # the tag
    reader = noise.FrameReader(cb.recv)
    ring = reader.recv_buffer()
    ring[: len(wire)] = wire
    with pytest.raises(DecryptError):
        reader.decrypt_received(len(wire))
    # A replayed message fails too: its nonce is behind the counter.
    ca, cb = _pair()
    first = noise.encrypt_frames(ca.send, b"one")
    reader = noise.FrameReader(cb.recv)
    assert reader.feed_and_decrypt(first) == [b"one"]
    with pytest.raises(DecryptError):
        reader.feed_and_decrypt(first)


def test_interop_with_noiseprotocol_both_roles() -> None:
    """Against an independent implementation (noiseprotocol, pulled in by py-libp2p):
    the same handshake hash and transport messages, with our libp2p payloads."""
    conn_mod = pytest.importorskip("noise.connection")
    for we_initiate in (True, False):
        ours_kp, theirs_kp = KeyPair.generate(), KeyPair.generate()
        their_static = os.urandom(32)
        their_pub = bytes(nacl.bindings.crypto_scalarmult_base(their_static))
        them = conn_mod.NoiseConnection.from_name(AESGCM_SUITE.name)
        them.set_as_responder() if we_initiate else them.set_as_initiator()
        them.set_keypair_from_private_bytes(conn_mod.Keypair.STATIC, their_static)
        them.start_handshake()
        their_payload = noise.encode_payload(theirs_kp.seed, their_pub)
        us = noise.Handshake(we_initiate, ours_kp.seed, theirs_kp.peer_id if we_initiate
                             else None, suite=AESGCM_SUITE)
        got_payloads: list[bytes] = []
        for step in range(3):
            ours_turn = (step % 2 == 0) == we_initiate
            if ours_turn:
                got_payloads.append(them.read_message(us.write_message()[2:]))
            else:
                us.read_message(bytes(them.write_message(their_payload if step else b"")))
        peer, ciphers = us.result()
        assert peer == theirs_kp.peer_id
        assert us._sym.h == them.get_handshake_hash()
        # Our identity payload reaches them intact and verifies against our static key.
        assert noise.verify_payload(got_payloads[-1], us._s_pub) == ours_kp.peer_id
        wire = ciphers.send.encrypt(b"hello from colony")
        assert bytes(them.decrypt(wire)) == b"hello from colony"
        assert ciphers.recv.decrypt(bytes(them.encrypt(b"hello back"))) == b"hello back"


@pytest.mark.parametrize(("setting", "aes_fast", "offered"), [
    ("auto", True, ("/colony/noise-aesgcm/1.0.0", "/noise")),
    ("auto", False, ("/noise",)),
    ("aesgcm", False, ("/colony/noise-aesgcm/1.0.0", "/noise")),
    ("aesgcm", True, ("/colony/noise-aesgcm/1.0.0", "/noise")),
    ("chacha", True, ("/noise",)),
    ("chacha", False, ("/noise",)),
])
def test_suites_for_each_setting(setting: str, aes_fast: bool, offered: tuple[str, ...]) -> None:
    suites = noise_cipher.suites_for(setting, aes_fast)
    assert tuple(s.protocol_id for s in suites) == offered
    assert noise_cipher.suite_of(offered[-1], suites) is CHACHA  # always the fallback


def test_bad_setting_and_unknown_suite_are_errors() -> None:
    with pytest.raises(ValueError, match="noise_cipher"):
        noise_cipher.suites_for("aes", True)
    with pytest.raises(ValueError):
        noise_cipher.suite_of("/noise", (AESGCM_SUITE,))


@pytest.mark.parametrize(("cpuinfo", "flags_has_aes"), [
    ("processor\t: 0\nflags\t\t: fpu sse2 aes avx2 vaes\n\nprocessor\t: 1\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2\n", False),
    ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1\n", True),
    ("processor\t: 0\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm crc32 cpuid\n", False),
    ("processor\t: 0\nisa\t\t: rv64imafdc\n", None),  # no flags listed: measure instead
    ("", None),
])
def test_cpu_flags_from_cpuinfo(cpuinfo: str, flags_has_aes: bool | None) -> None:
    flags = noise_choice.cpu_flags(cpuinfo)
    assert (None if flags is None else "aes" in flags) == flags_has_aes


def test_noise_suites_follow_the_setting() -> None:
    assert noise_choice.noise_suites("chacha") == (CHACHA,)
    assert noise_choice.noise_suites("aesgcm") == (AESGCM_SUITE, CHACHA)
    auto = noise_choice.noise_suites("auto")
    assert auto[-1] is CHACHA and auto[0] is (AESGCM_SUITE if noise_choice.aes_is_fast()
                                              else CHACHA)
    assert isinstance(noise_choice.measure_aes_faster(), bool)
