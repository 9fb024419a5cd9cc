"""The libp2p TLS 1.3 handshake's certificate (libp2p specs tls/tls.md), for QUIC.

Each endpoint presents one self-signed X.509 certificate on a fresh ECDSA P-256
key (the TLS key; aioquic proves possession of it in CertificateVerify). The
certificate carries the libp2p Public Key Extension, OID 1.3.6.1.4.1.53594.1.1:

    SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }

`publicKey` is the host's libp2p PublicKey protobuf (Ed25519 here, overlay.p2p.keys)
and `signature` its Ed25519 signature of "libp2p-tls-handshake:" ‖ the DER
SubjectPublicKeyInfo of the certificate. That binds the TLS key to the peer id.

`verify_chain` refuses, with a HandshakeError naming the reason: no certificate or
a chain of more than one, a certificate outside its validity period, a bad
self-signature, a missing or malformed extension, an unknown critical extension, a
non-Ed25519 host key, a signature that does not verify, or a peer other than the
one dialled. Sans-IO: `now` is passed in; no sockets, no clock.
"""

from __future__ import annotations

import datetime as dt
import os

import nacl.signing
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.p2p import keys
from overlay.p2p.errors import HandshakeError

EXTENSION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.53594.1.1")
SIGNATURE_PREFIX = b"libp2p-tls-handshake:"
ALPN = "libp2p"
#: go-libp2p backdates by an hour (clock skew) and lets certificates live 100 years.
_BACKDATE = dt.timedelta(hours=1)
_LIFETIME = dt.timedelta(days=365 * 100)
_MAX_EXTENSION_BYTES = 4096


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def encode_signed_key(public_key_pb: bytes, signature: bytes) -> bytes:
    """DER of SignedKey."""
    return _der(0x30, _der(0x04, public_key_pb) + _der(0x04, signature))


def _read_tlv(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """One DER element of type `tag` at `pos`: (its body, the position after it)."""
    if pos + 2 > len(data) or data[pos] != tag:
        raise HandshakeError(f"libp2p extension: expected DER tag {tag:#x} at byte {pos}")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 2 or pos + count > len(data):
            raise HandshakeError("libp2p extension: bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or (count == 2 and length < 0x100):
            raise HandshakeError("libp2p extension: non-minimal DER length")
        pos += count
    if pos + length > len(data):
        raise HandshakeError("libp2p extension: DER element runs past its end")
    return data[pos : pos + length], pos + length


def decode_signed_key(data: bytes) -> tuple[bytes, bytes]:
    """SignedKey DER → (PublicKey protobuf, signature); HandshakeError if malformed."""
    if len(data) > _MAX_EXTENSION_BYTES:
        raise HandshakeError(f"libp2p extension of {len(data)} bytes is too long")
    seq, end = _read_tlv(data, 0, 0x30)
    if end != len(data):
        raise HandshakeError("libp2p extension: trailing bytes after SignedKey")
    public_key_pb, pos = _read_tlv(seq, 0, 0x04)
    signature, pos = _read_tlv(seq, pos, 0x04)
    if pos != len(seq):
        raise HandshakeError("libp2p extension: trailing bytes inside SignedKey")
    return public_key_pb, signature


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def make_certificate(
    keypair: KeyPair, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A fresh self-signed certificate for `keypair` and its TLS private key."""
    tls_key = ec.generate_private_key(ec.SECP256R1())
    spki = tls_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = nacl.signing.SigningKey(keypair.seed).sign(SIGNATURE_PREFIX + spki).signature
    ext = encode_signed_key(keys.encode_public_key(keypair.public.raw), signature)
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, os.urandom(8).hex())])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(tls_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.UnrecognizedExtension(EXTENSION_OID, ext), critical=True)
        .sign(tls_key, hashes.SHA256())
    )
    return cert, tls_key


def verify_chain(
    chain: list[x509.Certificate], now: dt.datetime, expected_peer: PeerId | None = None
) -> PeerId:
    """The peer id a libp2p TLS certificate chain proves; HandshakeError otherwise."""
    if not chain:
        raise HandshakeError("peer presented no certificate")
    if len(chain) != 1:
        raise HandshakeError(f"peer presented {len(chain)} certificates, libp2p wants one")
    cert = chain[0]
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise HandshakeError(
            f"certificate valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, not now"
        )
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError) as e:
        raise HandshakeError(f"certificate is not validly self-signed: {e!r}") from None
    found: bytes | None = None
    for ext in cert.extensions:
        if ext.oid == EXTENSION_OID:
            if found is not None:
                raise HandshakeError("certificate carries the libp2p extension twice")
            if not isinstance(ext.value, x509.UnrecognizedExtension):
                raise HandshakeError("libp2p extension has an unexpected type")
            found = ext.value.value
        elif ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise HandshakeError(f"certificate has an unknown critical extension {ext.oid}")
    if found is None:
        raise HandshakeError("certificate lacks the libp2p public key extension")
    public_key_pb, signature = decode_signed_key(found)
    host_key = keys.decode_public_key(public_key_pb)
    keys.verify(host_key, SIGNATURE_PREFIX + _spki(cert), signature)
    peer = keys.peer_id_of(host_key)
    if expected_peer is not None and peer != expected_peer:
        raise HandshakeError(f"dialled {expected_peer.short()} but {peer.short()} answered")
    return peer

