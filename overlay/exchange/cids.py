"""The few CID operations block exchange needs, on raw CID bytes.

Bitswap carries CIDs as bytes and blocks as (prefix, data); the receiver rebuilds the
CID from the prefix and the data's hash, so a peer can only ever send a block that is
what its CID says (the hash check happens before anything is stored or passed on).
Spec: github.com/multiformats/cid, ipfs/specs BITSWAP.md.
"""

from __future__ import annotations

import hashlib

from overlay.core.errors import MalformedFrame
from overlay.core.multiformats import SHA2_256, decode_varint, encode_varint

DAG_PB = 0x70
RAW = 0x55


def parse(cid: bytes) -> tuple[int, int, int, bytes]:
    """(version, codec, multihash code, digest) of binary CID bytes."""
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


def multihash(cid: bytes) -> bytes:
    _, _, code, digest = parse(cid)
    return encode_varint(code) + encode_varint(len(digest)) + digest


def prefix(cid: bytes) -> bytes:
    """Bitswap 1.1+ block prefix: version, codec, multihash code and length."""
    version, codec, code, digest = parse(cid)
    return encode_varint(version) + encode_varint(codec) + encode_varint(code) + encode_varint(
        len(digest)
    )


def from_prefix(pfx: bytes, data: bytes | memoryview) -> bytes:
    """Compute the CID of `data` under `pfx` (hashing it). Only sha2-256 is accepted."""
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
        return b"\x12\x20" + digest
    if version != 1:
        raise MalformedFrame(f"unsupported CID version {version} in block prefix")
    return b"\x01" + encode_varint(codec) + b"\x12\x20" + digest


def verify(cid: bytes, data: bytes | memoryview) -> bool:
    """True when `data` hashes to `cid` (sha2-256 only)."""
    try:
        _, _, code, digest = parse(cid)
    except MalformedFrame:
        return False
    return code == SHA2_256 and hashlib.sha256(data).digest() == digest
