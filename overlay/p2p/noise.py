"""Noise XX with the libp2p handshake payload (libp2p noise spec), sans-IO.

Protocol `Noise_XX_25519_ChaChaPoly_SHA256` (libp2p's `/noise`) or, between colony
peers whose CPUs have AES instructions, `Noise_XX_25519_AESGCM_SHA256`
(`/colony/noise-aesgcm/1.0.0`; the suites and their CipherStates are in
noise_cipher.py), empty prologue:

    -> e
    <- e, ee, s, es     payload: responder's NoiseHandshakePayload
    -> s, se            payload: initiator's NoiseHandshakePayload

Each handshake and transport message travels as `uint16-be(len) ‖ message`, at most
65535 bytes. The payload is `NoiseHandshakePayload { bytes identity_key = 1; bytes
identity_sig = 2; }`: the libp2p PublicKey protobuf of the identity key and its
Ed25519 signature over `"noise-libp2p-static-key:" ‖ noise static public key`. A
peer that cannot sign for its static key, or whose peer id is not the one we
dialled, fails with HandshakeError before any application byte is exchanged.

`Handshake` is a plain state machine: `write_message()` returns the next framed
message to send, `read_message(msg)` takes the next one received (without its
length prefix). After three messages, `result()` gives the remote peer id and a
`CipherPair`. X25519 comes from libsodium (pynacl), ChaCha20-Poly1305 and AES-GCM
from pyca/cryptography (ChaCha ≈3.2 GB/s here vs ≈1.2 GB/s through pynacl), HKDF
from hmac.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

import nacl.bindings
import nacl.signing

from overlay.core.ids import PeerId
from overlay.p2p import keys, pb
from overlay.p2p.errors import DecryptError, HandshakeError
from overlay.p2p.noise_cipher import AESGCM_SUITE as AESGCM_SUITE
from overlay.p2p.noise_cipher import CHACHA as CHACHA
from overlay.p2p.noise_cipher import TAG_BYTES as TAG_BYTES
from overlay.p2p.noise_cipher import AesGcmCipherState as AesGcmCipherState
from overlay.p2p.noise_cipher import CipherState as CipherState
from overlay.p2p.noise_cipher import NoiseSuite as NoiseSuite

#: libp2p's `/noise` (ChaCha20-Poly1305); noise_cipher.AESGCM_SUITE is the other suite.
PROTOCOL_ID = CHACHA.protocol_id
PROTOCOL_NAME = CHACHA.name
SIGNATURE_PREFIX = b"noise-libp2p-static-key:"
MAX_MESSAGE_BYTES = 65535
HASH_BYTES = 32
#: Plaintext per transport message: the 65535-byte limit minus the AEAD tag.
MAX_PLAINTEXT_BYTES = MAX_MESSAGE_BYTES - TAG_BYTES
DH_BYTES = 32


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = hmac.digest(chaining_key, ikm, "sha256")
    out1 = hmac.digest(temp, b"\x01", "sha256")
    out2 = hmac.digest(temp, out1 + b"\x02", "sha256")
    return out1, out2


def _dh(secret: bytes, public: bytes) -> bytes:
    try:
        shared = nacl.bindings.crypto_scalarmult(secret, public)
    except Exception as e:  # libsodium refuses low-order points (all-zero output)
        raise HandshakeError(f"invalid X25519 public key: {e}") from None
    if shared == bytes(DH_BYTES):
        raise HandshakeError("X25519 shared secret is zero (low-order point)")
    return bytes(shared)


@dataclass(frozen=True, slots=True)
class CipherPair:
    """The transport keys after the handshake: one per direction."""

    send: CipherState
    recv: CipherState


class _Symmetric:
    """Noise SymmetricState: chaining key, handshake hash, optional cipher."""

    def __init__(self, suite: NoiseSuite) -> None:
        # Noise §5.2: a name of at most HASHLEN bytes is h itself, zero-padded
        # (ChaChaPoly's is exactly 32, AESGCM's 28); a longer one is hashed.
        name = suite.name
        self.h = name.ljust(HASH_BYTES, b"\0") if len(name) <= HASH_BYTES else (
            hashlib.sha256(name).digest())
        self.ck = self.h
        self.suite = suite
        self.cipher: CipherState | None = None
        self.mix_hash(b"")  # empty prologue

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, key = _hkdf2(self.ck, ikm)
        self.cipher = self.suite.cipher(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        out = plaintext if self.cipher is None else self.cipher.encrypt(plaintext, self.h)
        self.mix_hash(out)
        return out

    def decrypt_and_hash(self, data: bytes) -> bytes:
        if self.cipher is None:
            out = data
        else:
            try:
                out = self.cipher.decrypt(data, self.h)
            except DecryptError:
                raise HandshakeError("handshake message failed authentication") from None
        self.mix_hash(data)
        return out

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf2(self.ck, b"")
        return self.suite.cipher(k1), self.suite.cipher(k2)


def _x25519_keypair() -> tuple[bytes, bytes]:
    secret = os.urandom(32)
    return secret, bytes(nacl.bindings.crypto_scalarmult_base(secret))


def encode_payload(identity_seed: bytes, static_public: bytes) -> bytes:
    sk = nacl.signing.SigningKey(identity_seed)
    sig = sk.sign(SIGNATURE_PREFIX + static_public).signature
    return pb.field_bytes(1, keys.encode_public_key(bytes(sk.verify_key))) + pb.field_bytes(2, sig)


def verify_payload(payload: bytes, remote_static: bytes) -> PeerId:
    """Check the remote's identity payload against its Noise static key."""
    fields = pb.decode(payload)
    key_pb = pb.get_bytes(fields, 1)
    sig = pb.get_bytes(fields, 2)
    if key_pb is None or sig is None:
        raise HandshakeError("handshake payload lacks identity_key or identity_sig")
    public = keys.decode_public_key(key_pb)
    keys.verify(public, SIGNATURE_PREFIX + remote_static, sig)
    return keys.peer_id_of(public)


class Handshake:
    """One side of a Noise XX handshake with libp2p payloads.

    Message order: initiator writes 1, reads 2, writes 3; responder reads 1,
    writes 2, reads 3. Calling out of order raises HandshakeError (`LocalProtocolError`
    would be ours, but the order is driven by the caller's code, not the peer, so
    any misuse shows up in tests at once).
    """

    def __init__(
        self,
        initiator: bool,
        identity_seed: bytes,
        expected_peer: PeerId | None = None,
        *,
        static_secret: bytes | None = None,
        ephemeral_secret: bytes | None = None,
        suite: NoiseSuite = CHACHA,
    ) -> None:
        self.initiator = initiator
        self.expected_peer = expected_peer
        self.suite = suite
        self._sym = _Symmetric(suite)
        if static_secret is None:
            self._s, self._s_pub = _x25519_keypair()
        else:
            self._s = static_secret
            self._s_pub = bytes(nacl.bindings.crypto_scalarmult_base(static_secret))
        if ephemeral_secret is None:
            self._e, self._e_pub = _x25519_keypair()
        else:
            self._e = ephemeral_secret
            self._e_pub = bytes(nacl.bindings.crypto_scalarmult_base(ephemeral_secret))
        self._payload = encode_payload(identity_seed, self._s_pub)
        self._re = b""
        self._rs = b""
        self._step = 0  # messages processed so far (0..3)
        self.remote_peer: PeerId | None = None
        self._ciphers: CipherPair | None = None

    @property
    def complete(self) -> bool:
        return self._step == 3

    def _expect(self, writing: bool) -> None:
        if self._step >= 3:
            raise HandshakeError("handshake already complete")
        ours = (self._step % 2 == 0) == self.initiator
        if ours != writing:
            raise HandshakeError(f"handshake message {self._step + 1} is not ours to "
                                 f"{'write' if writing else 'read'}")

    def write_message(self) -> bytes:
        """The next handshake message, framed (`uint16-be len ‖ message`)."""
        self._expect(writing=True)
        sym = self._sym
        out = bytearray()
        if self._step == 0:  # -> e
            out += self._e_pub
            sym.mix_hash(self._e_pub)
            out += sym.encrypt_and_hash(b"")
        elif self._step == 1:  # <- e, ee, s, es
            out += self._e_pub
            sym.mix_hash(self._e_pub)
            sym.mix_key(_dh(self._e, self._re))
            out += sym.encrypt_and_hash(self._s_pub)
            sym.mix_key(_dh(self._s, self._re))
            out += sym.encrypt_and_hash(self._payload)
        else:  # -> s, se
            out += sym.encrypt_and_hash(self._s_pub)
            sym.mix_key(_dh(self._s, self._re))
            out += sym.encrypt_and_hash(self._payload)
        self._advance()
        return len(out).to_bytes(2, "big") + bytes(out)

    def read_message(self, msg: bytes) -> None:
        """Process the next received handshake message (without its length prefix)."""
        self._expect(writing=False)
        sym = self._sym
        if self._step == 0:  # -> e
            if len(msg) < DH_BYTES:
                raise HandshakeError("handshake message 1 is too short")
            self._re = msg[:DH_BYTES]
            sym.mix_hash(self._re)
            sym.decrypt_and_hash(msg[DH_BYTES:])  # payload: empty or ignored
        elif self._step == 1:  # <- e, ee, s, es
            if len(msg) < DH_BYTES + DH_BYTES + TAG_BYTES + TAG_BYTES:
                raise HandshakeError("handshake message 2 is too short")
            self._re = msg[:DH_BYTES]
            sym.mix_hash(self._re)
            sym.mix_key(_dh(self._e, self._re))
            self._rs = sym.decrypt_and_hash(msg[DH_BYTES : 2 * DH_BYTES + TAG_BYTES])
            sym.mix_key(_dh(self._e, self._rs))
            payload = sym.decrypt_and_hash(msg[2 * DH_BYTES + TAG_BYTES :])
            self._check_remote(payload)
        else:  # -> s, se
            if len(msg) < DH_BYTES + TAG_BYTES + TAG_BYTES:
                raise HandshakeError("handshake message 3 is too short")
            self._rs = sym.decrypt_and_hash(msg[: DH_BYTES + TAG_BYTES])
            sym.mix_key(_dh(self._e, self._rs))
            payload = sym.decrypt_and_hash(msg[DH_BYTES + TAG_BYTES :])
            self._check_remote(payload)
        self._advance()

    def _check_remote(self, payload: bytes) -> None:
        peer = verify_payload(payload, self._rs)
        if self.expected_peer is not None and peer != self.expected_peer:
            raise HandshakeError(f"dialled {self.expected_peer} but the peer is {peer}")
        self.remote_peer = peer

    def _advance(self) -> None:
        self._step += 1
        if self._step == 3:
            c1, c2 = self._sym.split()
            self._ciphers = CipherPair(c1, c2) if self.initiator else CipherPair(c2, c1)

    def result(self) -> tuple[PeerId, CipherPair]:
        if self._ciphers is None or self.remote_peer is None:
            raise HandshakeError("handshake not complete")
        return self.remote_peer, self._ciphers


def encrypt_frames(cipher: CipherState, data: bytes | bytearray | memoryview) -> bytes:
    """`data` as consecutive framed Noise transport messages, joined for one send
    (the negotiation phase and tests; a connection seals into its own buffer)."""
    pieces: list[bytes | memoryview] = [memoryview(data)]
    buf = bytearray(sealed_bytes_max(pieces))
    return bytes(memoryview(buf)[: seal_into(cipher, pieces, buf)])


#: A gathered run of small pieces (Yamux headers, the tail of a frame) at most this
#: long is sealed as its own message when a large piece follows, instead of filling
#: that message with a copy of the large piece's first bytes.
SMALL_SEAL_BYTES = 1024


def sealed_bytes_max(pieces: list[bytes | memoryview]) -> int:
    """An upper bound of what `seal_into` writes for `pieces`: every message costs
    18 bytes (length and tag), and there is at most one per full 65,519 bytes plus
    one per piece (a piece's tail, or the few bytes sealed before it) plus one."""
    total = sum(len(p) for p in pieces)
    return total + (total // MAX_PLAINTEXT_BYTES + len(pieces) + 1) * (2 + TAG_BYTES)


def seal_into(cipher: CipherState, pieces: list[bytes | memoryview], buf: bytearray) -> int:
    """The concatenation of `pieces` as framed Noise messages (`length, ciphertext,
    …`) written into `buf` (at least `sealed_bytes_max(pieces)` long); returns the
    bytes written, to send as one buffer.

    Messages carry up to 65,519 plaintext bytes each (the 65,535-byte limit minus
    the tag), so a 1 MiB write costs 17 AEAD calls. Small pieces (Yamux headers)
    are gathered into the next message; large ones are encrypted straight from
    their memory, so the only full copy of the payload is the encryption itself.
    A few gathered bytes before a large piece go out as a short message of their
    own: topping them up from the large piece copied up to 64 KiB of every 256 KiB
    Yamux frame once more (profiled on a bulk sender). Message boundaries carry no
    meaning to the peer (Noise is a byte stream to libp2p), so the wire is as valid.

    Each message is encrypted straight into the buffer the caller reuses: profiled
    on a bulk sender, a new ciphertext object per message was zero-filled before
    the cipher wrote it (pyo3) and allocated and freed per 64 KiB, and each message
    and its 2-byte length were two buffers of the vectored send."""
    view = memoryview(buf)
    at = 0

    def seal(plain: bytes | bytearray | memoryview) -> None:
        nonlocal at
        n = len(plain) + TAG_BYTES
        view[at] = n >> 8
        view[at + 1] = n & 0xFF
        cipher.encrypt_into(plain, view[at + 2 : at + 2 + n])
        at += 2 + n

    pending = bytearray()
    sealed = False
    for piece in pieces:
        p = memoryview(piece)
        if len(pending) + len(p) <= MAX_PLAINTEXT_BYTES:
            pending += p
            continue
        if pending:
            if len(pending) <= SMALL_SEAL_BYTES and len(p) >= MAX_PLAINTEXT_BYTES:
                seal(pending)
            else:
                take = MAX_PLAINTEXT_BYTES - len(pending)
                pending += p[:take]
                p = p[take:]
                seal(pending)
            pending = bytearray()
            sealed = True
        while len(p) >= MAX_PLAINTEXT_BYTES:
            seal(p[:MAX_PLAINTEXT_BYTES])
            p = p[MAX_PLAINTEXT_BYTES:]
            sealed = True
        pending += p
    if pending or not sealed:
        seal(pending)
    return at


#: The receive ring of `FrameReader.recv_buffer`, and the least free space a read
#: into it gets (the partial message left is moved to the front below that).
RING_BYTES = 1 << 20
MIN_RECV_BYTES = 256 << 10


class FrameReader:
    """Splits a received byte stream into Noise messages and decrypts them.

    Two ways in. `feed_and_decrypt(data)` → one plaintext per whole message; holds at
    most one partial message (≤ 65,537 bytes) beyond what was fed in one call. Or,
    for a connection's socket, `recv_buffer()` (read into it) then
    `decrypt_received(n)` → the plaintext of every whole message as one buffer.

    The second is the bulk path (issue #16, profiled on a fetcher): the socket is
    read into a 1 MiB ring, so the partial message at the end of a read is not
    copied out and back (it is moved to the front only when less than 256 KiB is
    free, once per ~1 MiB), and the messages of one read are decrypted into one
    buffer (`decrypt_into`), so a 256 KiB Yamux frame in one read is one piece for
    the layers above instead of four or five, each with its events and wakeups.
    """

    __slots__ = ("_buf", "_cipher", "_hi", "_lo", "_ring")

    def __init__(self, cipher: CipherState) -> None:
        self._cipher = cipher
        self._buf = bytearray()
        self._ring: memoryview | None = None
        self._lo = self._hi = 0  # the received bytes not yet decrypted: ring[lo:hi]

    def recv_buffer(self) -> memoryview:
        """Where the next socket read goes (then call `decrypt_received`)."""
        ring = self._ring
        if ring is None:  # first use: take over what `feed_and_decrypt` held
            ring = self._ring = memoryview(bytearray(RING_BYTES))
            self._hi = len(self._buf)
            ring[: self._hi] = self._buf
            self._buf = bytearray()
        if len(ring) - self._hi < MIN_RECV_BYTES:
            n = self._hi - self._lo  # one partial message: at most 65,537 bytes
            ring[:n] = ring[self._lo : self._hi]
            self._lo, self._hi = 0, n
        return ring[self._hi :]

    def decrypt_received(self, n: int) -> memoryview | None:
        """Decrypt the whole messages among what is held after `n` more bytes were
        read into `recv_buffer()`: their plaintexts, concatenated, as a read-only
        view of a new buffer nothing else refers to (None: no whole message yet)."""
        ring = self._ring
        assert ring is not None, "recv_buffer() first"
        pos, end = self._lo, self._hi + n
        spans: list[tuple[int, int]] = []
        total = 0
        while end - pos >= 2:
            length = ring[pos] << 8 | ring[pos + 1]
            if end - pos - 2 < length:
                break
            if length < TAG_BYTES:
                raise DecryptError(f"Noise message of {length} bytes is shorter than its tag")
            spans.append((pos + 2, length))
            total += length - TAG_BYTES
            pos += 2 + length
        out: memoryview | None = None
        if spans:
            out = memoryview(bytearray(total))
            at = 0
            for start, length in spans:
                k = length - TAG_BYTES
                self._cipher.decrypt_into(ring[start : start + length], out[at : at + k])
                at += k
            out = out.toreadonly()
        self._lo, self._hi = (0, 0) if pos == end else (pos, end)
        return out

    def feed_and_decrypt(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Decrypt every whole message now available. `data` may be a reused
        receive buffer: nothing refers to it after the call returns."""
        view = memoryview(data)
        out: list[bytes] = []
        pos = 0
        end = len(view)
        if self._buf:
            # Complete the message left over from the last call: copy only its
            # missing bytes, not the whole new chunk.
            buf = self._buf
            if len(buf) < 2:
                take = min(2 - len(buf), end)
                buf += view[:take]
                pos = take
                if len(buf) < 2:
                    return out
            need = 2 + (buf[0] << 8 | buf[1]) - len(buf)
            take = min(need, end - pos)
            buf += view[pos : pos + take]
            pos += take
            if take < need:
                return out
            self._buf = bytearray()
            out.append(self._open(memoryview(buf)[2:]))
        while end - pos >= 2:
            length = view[pos] << 8 | view[pos + 1]
            if end - pos - 2 < length:
                break
            out.append(self._open(view[pos + 2 : pos + 2 + length]))
            pos += 2 + length
        if pos < end:
            self._buf = bytearray(view[pos:])
        return out

    def _open(self, message: memoryview) -> bytes:
        if len(message) < TAG_BYTES:
            raise DecryptError(f"Noise message of {len(message)} bytes is shorter than its tag")
        return self._cipher.decrypt(message)

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)
