"""dag-pb (PBNode/PBLink) and UnixFS v1 `Data` encoding, written by hand.

Specs: ipld/specs `block-layer/codecs/dag-pb.md` and ipfs/specs `UNIXFS.md`::

    message PBLink { optional bytes Hash = 1; optional string Name = 2;
                     optional uint64 Tsize = 3; }
    message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }
    message Data   { required DataType Type = 1; optional bytes Data = 2;
                     optional uint64 filesize = 3; repeated uint64 blocksizes = 4;
                     optional uint64 hashType = 5; optional uint64 fanout = 6;
                     optional uint32 mode = 7; optional UnixTime mtime = 8; }

Encoding rules that decide CIDs (matching kubo/boxo and js @ipld/dag-pb):

- PBNode writes every Link (field 2) *before* Data (field 1), the canonical dag-pb
  order; links keep the order given (directories sort them by name bytes first).
- A PBLink writes Hash, then Name (written even when empty: kubo and js both emit
  ``12 00`` for the unnamed links of a file), then Tsize.
- UnixFS Data writes Type, Data (only when non-empty), filesize (files and raw only),
  then each blocksize as its own non-packed field 4 (proto2 ``repeated``).

Decoding is strict where the dag-pb spec says so (field order, no unknown PBNode or
PBLink fields, a Hash in every link) and raises `MalformedFrame`; callers add the CID.
Decoded `data` fields are memoryview slices of the block, so reading a v0 leaf does not
copy its payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from overlay.core.errors import MalformedFrame, TruncatedFrame
from overlay.core.multiformats import encode_varint
from overlay.core.protobuf import read_uvarint

Buf = bytes | bytearray | memoryview


class DataType(IntEnum):
    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True, slots=True)
class PBLink:
    hash: bytes  # binary CID of the child
    name: str | None
    tsize: int | None  # cumulative size of the child's DAG in bytes


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[PBLink, ...]
    data: memoryview | bytes | None


@dataclass(frozen=True, slots=True)
class UnixFSData:
    type: DataType
    data: memoryview | bytes = b""
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: tuple[int, int | None] | None = None  # (seconds, nanoseconds)

    def file_size(self) -> int:
        """Bytes of file content below this node (UnixFS: data + sum of blocksizes)."""
        if self.filesize is not None:
            return self.filesize
        return len(self.data) + sum(self.blocksizes)


# ---------------------------------------------------------------- varint helpers
# dag-pb is protobuf: its varints are protobuf's (overlay.core.protobuf.read_uvarint).


def _len_delim(buf: Buf, i: int, end: int, what: str) -> tuple[int, int]:
    n, i = read_uvarint(buf, i, end)
    if i + n > end:
        raise TruncatedFrame(f"{what} claims {n} bytes, only {end - i} left")
    return i, i + n


# ---------------------------------------------------------------- dag-pb


def encode_link(cid: bytes, name: str | None, tsize: int | None) -> bytes:
    parts = [b"\x0a", encode_varint(len(cid)), cid]
    if name is not None:
        nb = name.encode("utf-8")
        parts += [b"\x12", encode_varint(len(nb)), nb]
    if tsize is not None:
        parts += [b"\x18", encode_varint(tsize)]
    body = b"".join(parts)
    return b"\x12" + encode_varint(len(body)) + body


def encode_node(links: list[bytes] | tuple[bytes, ...], data: Buf | None) -> bytes:
    """A PBNode from already-encoded links (see `encode_link`) and optional Data."""
    if data is None:
        return b"".join(links)
    return b"".join((*links, b"\x0a", encode_varint(len(data)), data))


def encode_pbnode(node: PBNode) -> bytes:
    return encode_node(
        [encode_link(lk.hash, lk.name, lk.tsize) for lk in node.links], node.data
    )


def _decode_link(buf: Buf, i: int, end: int) -> PBLink:
    cid: bytes | None = None
    name: str | None = None
    tsize: int | None = None
    last = 0
    while i < end:
        tag, i = read_uvarint(buf, i, end)
        fnum, wtype = tag >> 3, tag & 7
        if fnum <= last:
            raise MalformedFrame("dag-pb: PBLink fields out of order or repeated")
        last = fnum
        if fnum == 1 and wtype == 2:
            s, i = _len_delim(buf, i, end, "dag-pb: PBLink.Hash")
            cid = bytes(buf[s:i])
        elif fnum == 2 and wtype == 2:
            s, i = _len_delim(buf, i, end, "dag-pb: PBLink.Name")
            try:
                name = bytes(buf[s:i]).decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedFrame("dag-pb: PBLink.Name is not UTF-8") from None
        elif fnum == 3 and wtype == 0:
            tsize, i = read_uvarint(buf, i, end)
        else:
            raise MalformedFrame(f"dag-pb: unexpected PBLink field {fnum} (wire type {wtype})")
    if cid is None:
        raise MalformedFrame("dag-pb: PBLink without Hash")
    return PBLink(cid, name, tsize)


def decode_pbnode(block: Buf) -> PBNode:
    """Strict dag-pb decode. `data` is a memoryview slice of `block` (no copy)."""
    mv = memoryview(block)
    end = len(mv)
    i = 0
    links: list[PBLink] = []
    data: memoryview | None = None
    while i < end:
        tag, i = read_uvarint(mv, i, end)
        fnum, wtype = tag >> 3, tag & 7
        if wtype != 2:
            raise MalformedFrame(f"dag-pb: PBNode field {fnum} has wire type {wtype}")
        s, i = _len_delim(mv, i, end, f"dag-pb: PBNode field {fnum}")
        if fnum == 2:
            if data is not None:
                raise MalformedFrame("dag-pb: PBNode.Links after Data")
            links.append(_decode_link(mv, s, i))
        elif fnum == 1:
            if data is not None:
                raise MalformedFrame("dag-pb: duplicate PBNode.Data")
            data = mv[s:i]
        else:
            raise MalformedFrame(f"dag-pb: unexpected PBNode field {fnum}")
    return PBNode(tuple(links), data)


def link_cids(block: Buf) -> list[bytes]:
    """Binary CIDs of every link of a dag-pb block (for the reference index)."""
    return [lk.hash for lk in decode_pbnode(block).links]


# ---------------------------------------------------------------- UnixFS Data


def encode_unixfs(
    dtype: DataType,
    data: Buf = b"",
    filesize: int | None = None,
    blocksizes: list[int] | tuple[int, ...] = (),
) -> bytes:
    parts: list[Buf] = [b"\x08", encode_varint(int(dtype))]
    if len(data):
        parts += [b"\x12", encode_varint(len(data)), data]
    if filesize is not None:
        parts += [b"\x18", encode_varint(filesize)]
    for bs in blocksizes:
        parts += [b"\x20", encode_varint(bs)]
    return b"".join(parts)


def encode_unixfs_full(u: UnixFSData) -> bytes:
    """Every field (for round-trip tests and symlink/metadata nodes)."""
    out = [encode_unixfs(u.type, u.data, u.filesize, u.blocksizes)]
    if u.hash_type is not None:
        out += [b"\x28", encode_varint(u.hash_type)]
    if u.fanout is not None:
        out += [b"\x30", encode_varint(u.fanout)]
    if u.mode is not None:
        out += [b"\x38", encode_varint(u.mode)]
    if u.mtime is not None:
        secs, nsecs = u.mtime
        body = b"\x08" + encode_varint(secs if secs >= 0 else secs + (1 << 64))
        if nsecs is not None:
            body += b"\x15" + nsecs.to_bytes(4, "little")
        out += [b"\x42", encode_varint(len(body)), body]
    return b"".join(out)


def _decode_mtime(buf: Buf, i: int, end: int) -> tuple[int, int | None]:
    secs = 0
    nsecs: int | None = None
    while i < end:
        tag, i = read_uvarint(buf, i, end)
        if tag == 0x08:
            secs, i = read_uvarint(buf, i, end)
            if secs >= 1 << 63:
                secs -= 1 << 64
        elif tag == 0x15:
            if i + 4 > end:
                raise TruncatedFrame("unixfs: truncated mtime nanoseconds")
            nsecs = int.from_bytes(buf[i : i + 4], "little")
            i += 4
        else:
            raise MalformedFrame(f"unixfs: unexpected UnixTime field tag {tag:#x}")
    return secs, nsecs


def decode_unixfs(data: Buf) -> UnixFSData:
    """Decode UnixFS `Data`; `data` of the result is a slice of the input (no copy)."""
    mv = memoryview(data)
    end = len(mv)
    i = 0
    dtype: int | None = None
    payload: memoryview | bytes = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    kw: dict[str, int | None] = {"hash_type": None, "fanout": None, "mode": None}
    mtime: tuple[int, int | None] | None = None
    while i < end:
        tag, i = read_uvarint(mv, i, end)
        fnum, wtype = tag >> 3, tag & 7
        if wtype == 0:
            v, i = read_uvarint(mv, i, end)
            if fnum == 1:
                dtype = v
            elif fnum == 3:
                filesize = v
            elif fnum == 4:
                blocksizes.append(v)
            elif fnum == 5:
                kw["hash_type"] = v
            elif fnum == 6:
                kw["fanout"] = v
            elif fnum == 7:
                kw["mode"] = v
            else:
                raise MalformedFrame(f"unixfs: unexpected varint field {fnum}")
        elif wtype == 2:
            s, i = _len_delim(mv, i, end, f"unixfs: field {fnum}")
            if fnum == 2:
                payload = mv[s:i]
            elif fnum == 4:  # packed blocksizes, accepted on read
                j = s
                while j < i:
                    v, j = read_uvarint(mv, j, i)
                    blocksizes.append(v)
            elif fnum == 8:
                mtime = _decode_mtime(mv, s, i)
            else:
                raise MalformedFrame(f"unixfs: unexpected bytes field {fnum}")
        else:
            raise MalformedFrame(f"unixfs: field {fnum} has unsupported wire type {wtype}")
    if dtype is None:
        raise MalformedFrame("unixfs: Data without Type")
    try:
        t = DataType(dtype)
    except ValueError:
        raise MalformedFrame(f"unixfs: unknown DataType {dtype}") from None
    return UnixFSData(
        t, payload, filesize, tuple(blocksizes), kw["hash_type"], kw["fanout"], kw["mode"],
        mtime,
    )
