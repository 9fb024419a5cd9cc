"""Peer ids and DHT keys.

A `PeerId` is the libp2p peer id of an Ed25519 key: the identity multihash of the
protobuf-encoded public key (`12D3KooW…` in base58btc), so other libp2p
implementations understand it (libp2p peer-ids spec). A `Key` is a point in the
256-bit Kademlia keyspace: sha256 of the peer id bytes, or of a CID's multihash
(DESIGN §3). Keys are plain ints so XOR distance is one machine operation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from overlay.core.errors import MalformedFrame
from overlay.core.multiformats import IDENTITY, b58decode, b58encode, decode_varint

KEY_BITS = 256

# protobuf PublicKey { KeyType Type = 1; bytes Data = 2; } with Type = Ed25519 (1).
_ED25519_PB_PREFIX = b"\x08\x01\x12\x20"
# identity multihash (code 0x00) of the 36-byte protobuf above.
_ED25519_PEER_PREFIX = b"\x00\x24" + _ED25519_PB_PREFIX


@dataclass(frozen=True, slots=True)
class PeerId:
    """A libp2p peer id. Compare and hash by its multihash bytes."""

    raw: bytes
    # Cached derived values; excluded from eq/hash so they cost nothing to compare.
    _key: int = field(default=-1, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self._key < 0:
            object.__setattr__(
                self, "_key", int.from_bytes(hashlib.sha256(self.raw).digest(), "big")
            )

    # Hand-written eq/hash (same meaning as the generated ones: by `raw` only): peer ids
    # are the keys of every member table, probe order and routing table, and the
    # generated methods build a tuple per call. `hash(raw)` is cached by the bytes
    # object; no output depends on hash values (bytes hashing is salted per process).
    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if other.__class__ is self.__class__:
            return self.raw == other.raw
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.raw)

    @classmethod
    def from_ed25519(cls, public_key: bytes) -> PeerId:
        if len(public_key) != 32:
            raise MalformedFrame("an Ed25519 public key is 32 bytes")
        return cls(_ED25519_PEER_PREFIX + public_key)

    @classmethod
    def from_bytes(cls, raw: bytes) -> PeerId:
        """Parse and validate multihash bytes (identity or sha2-256)."""
        code, i = decode_varint(raw)
        length, j = decode_varint(raw, i)
        if len(raw) - j != length:
            raise MalformedFrame("peer id multihash length mismatch")
        if code not in (IDENTITY, 0x12):
            raise MalformedFrame(f"peer id uses unsupported multihash code {code:#x}")
        if code == 0x12 and length != 32:
            raise MalformedFrame("sha2-256 peer id must have a 32-byte digest")
        if code == IDENTITY and length > 42:
            raise MalformedFrame("identity peer id longer than 42 bytes")
        return cls(bytes(raw))

    @classmethod
    def from_base58(cls, text: str) -> PeerId:
        return cls.from_bytes(b58decode(text))

    @property
    def key(self) -> int:
        """Position in the DHT keyspace: sha256(peer id bytes) as a 256-bit int."""
        return self._key

    def ed25519_public_key(self) -> bytes | None:
        """The embedded Ed25519 public key, if this id inlines one."""
        if self.raw.startswith(_ED25519_PEER_PREFIX) and len(self.raw) == 38:
            return self.raw[6:]
        return None

    def to_base58(self) -> str:
        return b58encode(self.raw)

    def __str__(self) -> str:
        return self.to_base58()

    def short(self) -> str:
        """Last 6 characters, as libp2p tools abbreviate peer ids in logs."""
        return self.to_base58()[-6:]


def key_of_bytes(data: bytes) -> int:
    """DHT key of arbitrary bytes (e.g. a CID's multihash): sha256 as an int."""
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


def distance(a: int, b: int) -> int:
    """Kademlia XOR distance between two keys."""
    return a ^ b


def common_prefix_len(a: int, b: int) -> int:
    """Number of leading bits shared by two 256-bit keys (256 when equal)."""
    return KEY_BITS - (a ^ b).bit_length()
