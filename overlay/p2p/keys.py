"""libp2p public keys on the wire (peer-ids spec): `PublicKey { KeyType Type = 1;
bytes Data = 2; }`. We hold and accept Ed25519 keys only (KeyType 1); a peer
presenting RSA, secp256k1 or ECDSA is refused with a clear HandshakeError.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.signing

from overlay.core.ids import PeerId
from overlay.p2p import pb
from overlay.p2p.errors import HandshakeError

KEY_TYPE_ED25519 = 1
_KEY_TYPE_NAMES = {0: "RSA", 1: "Ed25519", 2: "Secp256k1", 3: "ECDSA"}


def encode_public_key(ed25519_public: bytes) -> bytes:
    return pb.field_varint(1, KEY_TYPE_ED25519) + pb.field_bytes(2, ed25519_public)


def decode_public_key(data: bytes) -> bytes:
    """The raw 32-byte Ed25519 key inside a libp2p PublicKey protobuf."""
    fields = pb.decode(data)
    kind = pb.get_int(fields, 1)
    raw = pb.get_bytes(fields, 2)
    if kind != KEY_TYPE_ED25519:
        name = _KEY_TYPE_NAMES.get(kind or 0, str(kind))
        raise HandshakeError(f"peer key type {name} is not supported (Ed25519 only)")
    if raw is None or len(raw) != 32:
        raise HandshakeError("Ed25519 public key must be 32 bytes")
    return raw


def verify(ed25519_public: bytes, message: bytes, signature: bytes) -> None:
    """Raise HandshakeError unless `signature` is the key's signature of `message`."""
    try:
        nacl.signing.VerifyKey(ed25519_public).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as e:
        raise HandshakeError(f"identity signature does not verify: {e}") from None


def peer_id_of(ed25519_public: bytes) -> PeerId:
    return PeerId.from_ed25519(ed25519_public)
