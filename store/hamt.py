"""HAMT-sharded UnixFS directories, exactly as kubo and helia write them.

Spec: ipfs/specs UNIXFS.md "HAMTDirectory"; the byte-level reference is helia's
`ipfs-unixfs-importer` (dir-sharded.js) with `hamt-sharding`, which kubo's boxo agrees
with (tests/integration/test_store_hamt_interop.py checks our CIDs against it).

- **When**: a directory is sharded when its estimated size is above
  `SHARD_THRESHOLD_BYTES` (256 KiB, kubo's `HAMTShardingSize`). The estimate is
  helia's (after go-unixfsnode): the sum over entries that are not directories of
  the name's length in UTF-16 code units plus the byte length of a CID of the
  directory's CID version (36 bytes for v1, 34 for v0). Subdirectories do not count:
  the importers decide while they add entries, before a subdirectory has a CID.
- **Hash**: murmur3-x64-64 (multicodec 0x22): the first 8 bytes of murmur3 x64 128
  of the entry name's UTF-8 bytes, seed 0 (store/murmur3.py). Each level consumes the
  next 8 bits from the most
  significant end (fanout 256); after 64 bits the name is hashed again with one more
  byte, the depth, appended (`hamt-sharding`'s InfiniteHash).
- **Shape**: a slot holding one entry is a leaf, linked as `XX<name>` (XX the slot in
  upper-case hex); a slot two or more entries hash to is a sub-shard, linked as
  `XX`. The shape depends only on the set of names, not on their order.
- **Node**: dag-pb links in slot order; UnixFS Data `{Type: HAMTShard, Data: bitfield,
  hashType: 0x22, fanout: 256}`, the bitfield being the slots in use as a big-endian
  integer with no leading zero bytes. A shard's Tsize is its block's length plus its
  links' Tsizes.

Reading (`find`, `leaves`): any power-of-two fanout with murmur3-x64-64, as written
by kubo, helia or us; a lookup follows the name's hash (one shard per level), a
listing walks every shard. Both are bounded (`MAX_SHARDS` nodes, `MAX_LEVEL` levels)
and name what is wrong with a malformed shard: another hash type, a fanout that is
not a power of two or differs from its parent's, a bitfield that disagrees with the
links, a link name without its slot prefix, and (listing) an entry not where its
hash puts it or a shard linked twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence

from overlay.core.cid import DAG_PB, Cid
from store.murmur3 import murmur3_x64_128
from store.unixfs import (
    DataType,
    PBLink,
    PBNode,
    UnixFSData,
    encode_link,
    encode_node,
    encode_unixfs_full,
)

SHARD_THRESHOLD_BYTES = 256 * 1024
FANOUT = 256
BITS = 8
MURMUR3_X64_64 = 0x22
#: Deepest shard level: 8 bytes per hash, names differing only after 32 rehashes are
#: not a directory anyone makes.
MAX_LEVEL = 256

Entry = tuple[str, Cid, int]  # name, CID, Tsize
Put = Callable[[Cid, bytes, list[bytes]], None]


def estimate(entries: Sequence[Entry], dirs: frozenset[str], cid_version: int) -> int:
    """helia's estimate of a flat directory's size (see the module docstring)."""
    cid_len = 36 if cid_version == 1 else 34
    return sum(len(name.encode("utf-16-le")) // 2 + cid_len
               for name, _, _ in entries if name not in dirs)


def should_shard(entries: Sequence[Entry], dirs: frozenset[str], cid_version: int) -> bool:
    return estimate(entries, dirs, cid_version) > SHARD_THRESHOLD_BYTES


#: Shard nodes one listing may read (a 10^6-entry directory has ~4,000).
MAX_SHARDS = 65536


class HamtError(ValueError):
    """A shard tree we cannot read, with the reason."""


def lookup_index(name: bytes, level: int, bits: int = BITS) -> int:
    """The slot `name` takes at shard level `level` (0 = the root shard): bits
    [level·bits, (level+1)·bits) of the stream h(name) ‖ h(name ‖ 1) ‖ h(name ‖ 2) …,
    h the first 64 bits of murmur3 x64 128, most significant bit first."""
    start, end = level * bits, (level + 1) * bits
    stream, have = 0, 0
    for depth in range(start // 64, (end + 63) // 64):
        data = name if depth == 0 else name + bytes([depth & 0xFF])
        stream = (stream << 64) | murmur3_x64_128(data)[0]
        have += 64
    skip = start - (start // 64) * 64
    return (stream >> (have - skip - bits)) & ((1 << bits) - 1)


def bitfield(slots: Sequence[int]) -> bytes:
    mask = 0
    for s in slots:
        mask |= 1 << s
    return mask.to_bytes(max(1, (mask.bit_length() + 7) // 8), "big")


def build_shard(entries: Sequence[Entry], cid_version: int, put: Put,
                level: int = 0) -> tuple[Cid, int]:
    """Write the shard tree of `entries` (unique names) through `put`; its root CID
    and Tsize. `put(cid, block, child CIDs as bytes)` stores one block."""
    if level > MAX_LEVEL:
        raise ValueError("HAMT deeper than any name set needs: duplicate names?")
    groups: dict[int, list[Entry]] = {}
    for e in entries:
        groups.setdefault(lookup_index(e[0].encode("utf-8"), level), []).append(e)
    links: list[tuple[str, Cid, int]] = []
    for slot in sorted(groups):
        group = groups[slot]
        prefix = f"{slot:02X}"
        if len(group) == 1:
            name, cid, tsize = group[0]
            links.append((prefix + name, cid, tsize))
        else:
            sub, size = build_shard(group, cid_version, put, level + 1)
            links.append((prefix, sub, size))
    data = encode_unixfs_full(UnixFSData(DataType.HAMT_SHARD, bitfield(sorted(groups)),
                                         hash_type=MURMUR3_X64_64, fanout=FANOUT))
    block = encode_node([encode_link(c.to_bytes(), n, t) for n, c, t in links], data)
    cid = Cid(cid_version, DAG_PB, hashlib.sha256(block).digest())
    put(cid, block, [c.to_bytes() for _, c, _ in links])
    return cid, len(block) + sum(t for _, _, t in links)


ReadNode = Callable[[Cid], tuple[PBNode, UnixFSData]]


def _shard_bits(u: UnixFSData, cid: Cid) -> int:
    if u.type is not DataType.HAMT_SHARD:
        raise HamtError(f"{cid} inside a HAMT directory is not a shard ({u.type.name})")
    fanout = u.fanout or 0
    if u.hash_type != MURMUR3_X64_64 or fanout < 2 or fanout & (fanout - 1) or fanout > 1 << 16:
        raise HamtError(f"HAMT shard {cid} has hash type {u.hash_type} and fanout {fanout}; "
                        "only murmur3-x64-64 (0x22) with a power-of-two fanout is read")
    return fanout.bit_length() - 1


def _slots(node: PBNode, u: UnixFSData, cid: Cid, bits: int) -> Iterator[tuple[int, PBLink]]:
    """(slot, link) of each link, checked against its name and the bitfield."""
    pad = len(f"{(1 << bits) - 1:X}")
    mask = int.from_bytes(bytes(u.data), "big")
    seen = 0
    for lk in node.links:
        name = lk.name or ""
        try:
            slot = int(name[:pad], 16)
        except ValueError:
            raise HamtError(f"HAMT shard {cid}: link {name[:40]!r} has no slot prefix") from None
        if len(name) < pad or slot >= 1 << bits or not mask >> slot & 1:
            raise HamtError(f"HAMT shard {cid}: link {name[:40]!r} is not in its bitfield")
        seen |= 1 << slot
        yield slot, lk
    if seen != mask:
        raise HamtError(f"HAMT shard {cid}: bitfield and links disagree")


def _same_fanout(bits: int, parent: int | None, cid: Cid) -> None:
    """Sub-shards share their root's fanout: the hash is cut in equal pieces."""
    if parent is not None and bits != parent:
        raise HamtError(f"HAMT shard {cid} has fanout {1 << bits} under a shard of "
                        f"fanout {1 << parent}")


def find(read: ReadNode, root: Cid, name: str) -> Cid | None:
    """The CID of entry `name` in the shard tree `root` (one shard per level)."""
    key = name.encode("utf-8")
    cur = root
    parent: int | None = None
    for level in range(MAX_LEVEL):
        node, u = read(cur)
        bits = _shard_bits(u, cur)
        _same_fanout(bits, parent, cur)
        parent = bits
        pad = len(f"{(1 << bits) - 1:X}")
        want = lookup_index(key, level, bits)
        for slot, lk in _slots(node, u, cur, bits):
            if slot != want:
                continue
            if len(lk.name or "") == pad:  # a sub-shard: one level down
                cur = Cid.from_bytes(lk.hash)
                break
            return Cid.from_bytes(lk.hash) if (lk.name or "")[pad:] == name else None
        else:
            return None
    raise HamtError(f"HAMT directory {root} deeper than {MAX_LEVEL} levels")


def leaves(read: ReadNode, root: Cid) -> Iterator[tuple[str, PBLink]]:
    """Every entry (name, link) of the shard tree `root`, in shard order.

    Refuses what a lookup would not find, so `ls` and `get` show exactly what paths
    reach: an entry in a slot its name's hash does not lead to, a sub-shard of
    another fanout, and a shard linked twice (each visit would list its entries again:
    a DAG of n distinct blocks could list 256^depth entries)."""
    stack: list[tuple[Cid, int, int | None]] = [(root, 0, None)]
    seen: set[Cid] = set()
    while stack:
        cid, level, parent = stack.pop()
        if cid in seen:
            raise HamtError(f"HAMT directory {root} links shard {cid} twice")
        seen.add(cid)
        if len(seen) > MAX_SHARDS or level > MAX_LEVEL:
            raise HamtError(f"HAMT directory {root} has more than {MAX_SHARDS} shards")
        node, u = read(cid)
        bits = _shard_bits(u, cid)
        _same_fanout(bits, parent, cid)
        pad = len(f"{(1 << bits) - 1:X}")
        subs: list[tuple[Cid, int, int | None]] = []
        for slot, lk in _slots(node, u, cid, bits):
            name = lk.name or ""
            if len(name) == pad:
                subs.append((Cid.from_bytes(lk.hash), level + 1, bits))
                continue
            entry = name[pad:]
            if lookup_index(entry.encode("utf-8"), level, bits) != slot:
                raise HamtError(f"HAMT shard {cid}: entry {entry[:40]!r} is not where its "
                                "hash puts it")
            yield entry, lk
        stack.extend(reversed(subs))
