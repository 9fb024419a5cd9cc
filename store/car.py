"""CAR files (ipld.io/specs/transport/car): export a DAG, import CARv1 and CARv2.

CARv1 is a varint-length-prefixed dag-cbor header ``{roots, version: 1}`` followed by
sections, each ``varint(len(cid) + len(block)) cid block``. CARv2 is an 11-byte pragma,
a 40-byte header (characteristics, data offset, data size, index offset; little-endian
u64s after the 16-byte characteristics) and a CARv1 payload at the data offset; the
index is ignored.

Export walks the DAG depth-first from the root, children in link order, each block
once (the order `ipfs dag export` uses), reading links from the reference index.

Import streams sections with bounded memory (one section at a time, at most
`MAX_BLOCK` bytes, flushed to the store in batches through `BlockStore.put_many`).
Invariants: every block is verified against its CID before it is queued for the
store (sha2-256 by hashing; identity multihashes by comparing the digest with the
bytes, and such blocks are not stored since the CID holds them); any malformed input
raises `CarError` and nothing unverified is ever stored. A CID we cannot verify or
cannot store (another hash function, a codec other than raw/dag-pb) is refused.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from overlay.core.cid import DAG_PB, RAW, Cid
from overlay.core.dagcbor import decode_car_header, encode_car_header
from overlay.core.errors import ColonyError, WireError
from overlay.core.multiformats import IDENTITY, SHA2_256, decode_varint, encode_varint
from store.blockstore import BlockStore, StoreError
from store.unixfs import link_cids

#: Largest block accepted on import (kubo's own limit is 2 MiB; be generous).
MAX_BLOCK = 4 << 20
#: Largest CAR header accepted (it holds only the roots).
MAX_HEADER = 1 << 20
#: Largest CID accepted in a section.
MAX_CID = 128
#: Flush to the store after this many queued bytes.
BATCH_BYTES = 8 << 20
CARV2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")
_V2_HEADER = struct.Struct("<16sQQQ")


class CarError(StoreError):
    """A CAR file that is malformed, truncated, or holds a block we cannot verify."""


@dataclass(frozen=True, slots=True)
class Imported:
    roots: list[Cid]
    blocks: int  # sections read
    new: int  # blocks not already in the store
    nbytes: int  # block bytes read


# ---------------------------------------------------------------- export


def iter_dag(store: BlockStore, root: Cid) -> Iterator[tuple[Cid, bytes]]:
    """(cid, block) depth-first from `root`, each block once; blocks are hash-checked."""
    seen: set[bytes] = set()
    stack: list[Cid] = [root]
    while stack:
        cid = stack.pop()
        if cid.multihash in seen:
            continue
        seen.add(cid.multihash)
        with store.reader() as r:
            block = bytes(r.read(cid, context="CAR export"))
            links = r.links(cid.multihash) if cid.codec == DAG_PB else None
        yield cid, block
        if links:
            stack.extend(reversed([Cid.from_bytes(lk) for lk in links]))


def export_car(store: BlockStore, root: Cid, write: Callable[[bytes], object],
               progress: Callable[[int], None] | None = None) -> int:
    """Write the DAG under `root` as a CARv1 to `write`; returns the block count."""
    header = encode_car_header([root.to_bytes()])
    write(encode_varint(len(header)) + header)
    n = 0
    for cid, block in iter_dag(store, root):
        cb = cid.to_bytes()
        write(encode_varint(len(cb) + len(block)) + cb)
        write(block)
        n += 1
        if progress is not None:
            progress(len(block))
    return n


# ---------------------------------------------------------------- import


class _Source:
    """Exact reads from a binary stream, counting bytes, with clear truncation errors."""

    def __init__(self, f: BinaryIO, limit: int | None = None) -> None:
        self.f = f
        self.pos = 0
        self.limit = limit  # bytes we may read (a CARv2 data size), None: to EOF

    def read(self, n: int, what: str) -> bytes:
        if self.limit is not None and self.pos + n > self.limit:
            raise CarError(f"truncated CAR: {what} at byte {self.pos} runs past the payload")
        out = self.f.read(n)
        if len(out) != n:
            raise CarError(f"truncated CAR: {what} at byte {self.pos} "
                           f"needs {n} bytes, got {len(out)}")
        self.pos += n
        return out

    def varint(self, what: str, *, eof_ok: bool = False) -> int | None:
        start = self.pos
        buf = bytearray()
        while True:
            if self.limit is not None and self.pos >= self.limit:
                b = b""
            else:
                b = self.f.read(1)
            if not b:
                if eof_ok and not buf:
                    return None
                raise CarError(f"truncated CAR: {what} varint at byte {start}")
            self.pos += 1
            buf += b
            if not b[0] & 0x80:
                break
            if len(buf) >= 9:
                raise CarError(f"malformed CAR: {what} varint at byte {start} is too long")
        try:
            value, _ = decode_varint(bytes(buf))
        except WireError as e:
            raise CarError(f"malformed CAR: {what} varint at byte {start}: {e}") from None
        return value


def _cid_length(section: bytes, at: int) -> int:
    """Length of the binary CID at the start of `section`."""
    if section[:2] == b"\x12\x20":
        return 34
    try:
        version, i = decode_varint(section)
        if version != 1:
            raise CarError(f"malformed CAR: section at byte {at}: CID version {version}")
        _, i = decode_varint(section, i)
        _, i = decode_varint(section, i)
        length, i = decode_varint(section, i)
    except WireError as e:
        raise CarError(f"malformed CAR: section at byte {at}: bad CID: {e}") from None
    if i + length > len(section) or length > MAX_CID:
        raise CarError(f"malformed CAR: section at byte {at}: CID runs past the section")
    return i + length


def verify_section(cid_bytes: bytes, block: bytes | memoryview, at: int = 0) -> Cid | None:
    """Check `block` against `cid_bytes`; the storable `Cid`, or None for identity blocks.

    Raises `CarError` when the bytes do not match or the CID cannot be verified/stored.
    """
    try:
        version, i = (0, 0) if cid_bytes[:2] == b"\x12\x20" else decode_varint(cid_bytes)
        codec = DAG_PB
        if version == 1:
            codec, i = decode_varint(cid_bytes, i)
        code, i = decode_varint(cid_bytes, i)
        length, i = decode_varint(cid_bytes, i)
    except WireError as e:
        raise CarError(f"malformed CAR: section at byte {at}: bad CID: {e}") from None
    digest = cid_bytes[i:]
    if len(digest) != length:
        raise CarError(f"malformed CAR: section at byte {at}: multihash length mismatch")
    if code == IDENTITY:
        if digest != block:
            raise CarError(f"CAR block at byte {at} does not match its identity CID")
        return None
    if code != SHA2_256 or length != 32:
        raise CarError(f"CAR block at byte {at}: cannot verify multihash {code:#x} "
                       "(only sha2-256 and identity)")
    if codec not in (RAW, DAG_PB):
        raise CarError(f"CAR block at byte {at}: codec {codec:#x} cannot be stored "
                       "(raw and dag-pb only)")
    cid = Cid.from_bytes(cid_bytes)
    if hashlib.sha256(block).digest() != cid.digest:
        raise CarError(f"CAR block {cid} at byte {at} does not match its CID")
    return cid


def _open_payload(f: BinaryIO) -> tuple[_Source, list[bytes]]:
    """Read the header(s); the source positioned at the first CARv1 section, and roots."""
    src = _Source(f)
    hlen = src.varint("header length")
    assert hlen is not None
    if hlen == 0 or hlen > MAX_HEADER:
        raise CarError(f"malformed CAR: header length {hlen} is absurd")
    raw = src.read(hlen, "header")
    try:
        version, roots = decode_car_header(raw)
    except WireError as e:
        raise CarError(f"malformed CAR: {e}") from None
    if version == 1:
        return src, roots
    if version != 2 or encode_varint(hlen) + raw != CARV2_PRAGMA:
        raise CarError(f"unsupported CAR version {version} (1 and 2 are read)")
    _, offset, size, _ = _V2_HEADER.unpack(src.read(_V2_HEADER.size, "CARv2 header"))
    if offset < src.pos:
        raise CarError(f"malformed CARv2: data offset {offset} overlaps the header")
    if offset - src.pos > MAX_HEADER:
        raise CarError(f"malformed CARv2: data offset {offset} is absurd")
    src.read(offset - src.pos, "CARv2 padding")
    inner, inner_roots = _open_payload_v1(_Source(f, limit=size))
    return inner, inner_roots


def _open_payload_v1(src: _Source) -> tuple[_Source, list[bytes]]:
    hlen = src.varint("inner header length")
    assert hlen is not None
    if hlen == 0 or hlen > MAX_HEADER:
        raise CarError(f"malformed CAR: header length {hlen} is absurd")
    try:
        version, roots = decode_car_header(src.read(hlen, "inner header"))
    except WireError as e:
        raise CarError(f"malformed CAR: {e}") from None
    if version != 1:
        raise CarError(f"malformed CARv2: inner payload has version {version}, not 1")
    return src, roots


def iter_sections(f: BinaryIO) -> tuple[list[Cid], Iterator[tuple[Cid | None, bytes]]]:
    """(roots, verified (cid, block) pairs) of a CAR stream; cid None: identity block."""
    src, roots_raw = _open_payload(f)
    roots: list[Cid] = []
    for r in roots_raw:
        try:
            roots.append(Cid.from_bytes(r))
        except ColonyError as e:
            raise CarError(f"CAR root {r.hex()} is not supported: {e}") from None

    def sections() -> Iterator[tuple[Cid | None, bytes]]:
        while True:
            at = src.pos
            n = src.varint("section length", eof_ok=True)
            if n is None:
                return
            if n == 0 or n > MAX_BLOCK + MAX_CID:
                raise CarError(f"malformed CAR: section length {n} at byte {at} is absurd")
            section = src.read(n, "section")
            k = _cid_length(section, at)
            yield verify_section(section[:k], section[k:], at), section[k:]

    return roots, sections()


def import_car(store: BlockStore, f: BinaryIO,
               progress: Callable[[int], None] | None = None) -> Imported:
    """Verify and store every block of the CAR in `f`; `CarError` on bad input."""
    roots, sections = iter_sections(f)
    batch: list[tuple[Cid, bytes, list[bytes] | None]] = []
    queued = blocks = new = nbytes = 0
    for cid, block in sections:
        blocks += 1
        nbytes += len(block)
        if progress is not None:
            progress(len(block))
        if cid is None:
            continue
        links = None
        if cid.codec == DAG_PB:
            try:
                links = link_cids(block)
            except (ColonyError, ValueError, IndexError) as e:
                raise CarError(f"CAR block {cid} is not valid dag-pb: {e}") from None
        batch.append((cid, block, links))
        queued += len(block)
        if queued >= BATCH_BYTES:
            new += store.put_many(batch)
            batch, queued = [], 0
    if batch:
        new += store.put_many(batch)
    return Imported(roots, blocks, new, nbytes)
