"""Content identifiers (multiformats CID spec, github.com/multiformats/cid).

Two forms are produced and parsed:

- CIDv0: the bare sha2-256 multihash of a dag-pb block, written in base58btc
  (``Qm…``, 46 characters). Binary form: ``0x12 0x20 <32-byte digest>``.
- CIDv1: ``<varint version=1><varint codec><multihash>``, written in lower-case base32
  with the multibase prefix ``b`` (``bafy…`` for dag-pb, ``bafk…`` for raw).

Only sha2-256 multihashes are accepted, and only the codecs a UnixFS store holds:
raw (0x55) and dag-pb (0x70). The multihash is what the block store keys blocks by
(as kubo does since 0.12), so the same bytes under a v0 and a v1 CID are stored once.

Invariant: ``Cid.parse(str(c)) == c`` and ``Cid.from_bytes(c.to_bytes()) == c`` for
every `Cid` this module constructs. Every parse failure raises `InvalidCid` with a
message that quotes the offending text.

Block exchange works on raw CID bytes instead (the functions at the end): Bitswap
carries CIDs as bytes and blocks as (prefix, data), and a remote peer may want CIDs of
any codec. The receiver rebuilds the CID from the prefix and the data's hash, so a peer
can only ever send a block that is what its CID says. Malformed wire bytes raise
`MalformedFrame` there, as any other undecodable frame does (spec: ipfs/specs
BITSWAP.md).

This is the one CID module: the store (keys blocks by `Cid.multihash`), block exchange,
the runtime and the CLI all import it; it imports only overlay.core.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from overlay.core.errors import InvalidCid, MalformedFrame, WireError
from overlay.core.multiformats import (
    SHA2_256,
    b32decode_lower,
    b32encode_lower,
    b58decode,
    b58encode,
    decode_varint,
    encode_varint,
)

RAW = 0x55
DAG_PB = 0x70
CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb"}
_MH_PREFIX = b"\x12\x20"  # sha2-256, 32 bytes
_V1_PREFIX = {RAW: b"\x01\x55" + _MH_PREFIX, DAG_PB: b"\x01\x70" + _MH_PREFIX}
#: Longest CID string accepted; a v1 sha2-256 CID in base32 is 59 characters.
MAX_CID_CHARS = 128


def _quote(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


@dataclass(frozen=True, slots=True)
class Cid:
    """A parsed CID. Compares by (version, codec, digest)."""

    version: int
    codec: int
    digest: bytes  # the 32-byte sha2-256 digest

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise InvalidCid(f"unsupported CID version {self.version}")
        if self.codec not in CODEC_NAMES:
            raise InvalidCid(f"unsupported CID codec {self.codec:#x} (raw and dag-pb only)")
        if self.version == 0 and self.codec != DAG_PB:
            raise InvalidCid("a CIDv0 is always dag-pb")
        if len(self.digest) != 32:
            raise InvalidCid(f"a sha2-256 digest is 32 bytes, not {len(self.digest)}")

    # ------------------------------------------------------------ construction

    @classmethod
    def of(cls, codec: int, data: bytes | bytearray | memoryview, version: int = 1) -> Cid:
        """The CID of `data` (hashed here, once)."""
        return cls(version, codec, hashlib.sha256(data).digest())

    @classmethod
    def from_multihash(cls, mh: bytes, codec: int = DAG_PB, version: int = 1) -> Cid:
        if len(mh) != 34 or not mh.startswith(_MH_PREFIX):
            raise InvalidCid(f"multihash {mh.hex()} is not sha2-256")
        return cls(version, codec, bytes(mh[2:]))

    @classmethod
    def from_bytes(cls, raw: bytes | memoryview) -> Cid:
        """Parse binary CID bytes (v0: a bare multihash; v1: version+codec+multihash)."""
        raw = bytes(raw)
        if len(raw) == 34 and raw.startswith(_MH_PREFIX):
            return cls(0, DAG_PB, raw[2:])
        try:
            version, i = decode_varint(raw)
            if version != 1:
                raise InvalidCid(f"CID bytes {raw.hex()}: unsupported version {version}")
            codec, i = decode_varint(raw, i)
            code, i = decode_varint(raw, i)
            length, i = decode_varint(raw, i)
        except WireError as e:
            raise InvalidCid(f"CID bytes {raw.hex()}: {e}") from None
        if code != SHA2_256 or length != 32:
            raise InvalidCid(
                f"CID bytes {raw.hex()}: multihash {code:#x}/{length} is not sha2-256"
            )
        if len(raw) - i != 32:
            raise InvalidCid(f"CID bytes {raw.hex()}: digest length does not match")
        if codec not in CODEC_NAMES:
            raise InvalidCid(f"CID bytes {raw.hex()}: unsupported codec {codec:#x}")
        return cls(1, codec, raw[i:])

    @classmethod
    def parse(cls, text: str) -> Cid:
        """Parse a CID string: ``Qm…`` (v0) or multibase base32 ``b…`` / base58 ``z…`` (v1)."""
        if not isinstance(text, str):
            raise InvalidCid(f"a CID must be a string, not {type(text).__name__}")
        s = text.strip()
        if not s or len(s) > MAX_CID_CHARS:
            raise InvalidCid(f"invalid CID {_quote(text)}: empty or too long")
        try:
            if len(s) == 46 and s.startswith("Qm"):
                raw = b58decode(s)
            elif s[0] == "b" or s[0] == "B":
                raw = b32decode_lower(s[1:].lower())
            elif s[0] == "z":
                raw = b58decode(s[1:])
            else:
                raise InvalidCid(
                    f"invalid CID {_quote(text)}: expected Qm… (v0) or b… (v1 base32)"
                )
        except WireError as e:
            raise InvalidCid(f"invalid CID {_quote(text)}: {e}") from None
        try:
            cid = cls.from_bytes(raw)
        except InvalidCid as e:
            raise InvalidCid(f"invalid CID {_quote(text)}: {e}") from None
        if cid.version == 0 and not (len(s) == 46 and s.startswith("Qm")):
            raise InvalidCid(f"invalid CID {_quote(text)}: a CIDv0 must be written Qm…")
        return cid

    # ------------------------------------------------------------ views

    @property
    def multihash(self) -> bytes:
        """The block store key: ``0x12 0x20 <digest>``."""
        return _MH_PREFIX + self.digest

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return _MH_PREFIX + self.digest
        return _V1_PREFIX[self.codec] + self.digest

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.to_bytes())
        return "b" + b32encode_lower(self.to_bytes())

    def __repr__(self) -> str:
        return f"Cid({self})"

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES[self.codec]

    def to_v1(self) -> Cid:
        return Cid(1, self.codec, self.digest)

    def with_version(self, version: int) -> Cid:
        return Cid(version, self.codec, self.digest)

    def verify(self, data: bytes | bytearray | memoryview) -> bool:
        """True when `data` hashes to this CID's digest."""
        return hashlib.sha256(data).digest() == self.digest



# ---------------------------------------------------------------- raw CID bytes (Bitswap)


def parse_bytes(cid: bytes) -> tuple[int, int, int, bytes]:
    """(version, codec, multihash code, digest) of binary CID bytes, any codec."""
    if len(cid) == 34 and cid[0] == 0x12 and cid[1] == 0x20:
        return 0, DAG_PB, SHA2_256, cid[2:]
    version, i = decode_varint(cid)
    if version != 1:
        raise MalformedFrame(f"unsupported CID version {version}")
    codec, i = decode_varint(cid, i)
    code, i = decode_varint(cid, i)
    length, i = decode_varint(cid, i)
    digest = cid[i:]
    if len(digest) != length:
        raise MalformedFrame("CID multihash length mismatch")
    return 1, codec, code, digest


def block_prefix(cid: bytes) -> bytes:
    """Bitswap 1.1+ block prefix: version, codec, multihash code and length."""
    version, codec, code, digest = parse_bytes(cid)
    return encode_varint(version) + encode_varint(codec) + encode_varint(code) + encode_varint(
        len(digest)
    )


def from_block_prefix(pfx: bytes, data: bytes | memoryview) -> bytes:
    """Compute the CID bytes of `data` under `pfx` (hashing it). Only sha2-256 is accepted."""
    version, i = decode_varint(pfx)
    codec, i = decode_varint(pfx, i)
    code, i = decode_varint(pfx, i)
    length, i = decode_varint(pfx, i)
    if i != len(pfx):
        raise MalformedFrame("trailing bytes in block prefix")
    if code != SHA2_256 or length != 32:
        raise MalformedFrame(f"unsupported multihash {code:#x}/{length} in block prefix")
    digest = hashlib.sha256(data).digest()
    if version == 0:
        if codec != DAG_PB:
            raise MalformedFrame("CIDv0 must be dag-pb")
        return _MH_PREFIX + digest
    if version != 1:
        raise MalformedFrame(f"unsupported CID version {version} in block prefix")
    return b"\x01" + encode_varint(codec) + _MH_PREFIX + digest


def verify_bytes(cid: bytes, data: bytes | memoryview) -> bool:
    """True when `data` hashes to the binary CID `cid` (sha2-256 only)."""
    try:
        _, _, code, digest = parse_bytes(cid)
    except MalformedFrame:
        return False
    return code == SHA2_256 and hashlib.sha256(data).digest() == digest
