"""The gateway's reads of UnixFS DAGs: paths, nodes, file bytes and CAR blocks, each
block read in its own short read transaction.

Spec: ipfs/specs http-gateways (PATH_GATEWAY.md "Traversing through UnixFS",
TRUSTLESS_GATEWAY.md `dag-scope`, `entity-bytes`), UNIXFS.md (a file's bytes are its
node's `Data` then its children's, in link order, sized by `blocksizes`).

Why not `store.exporter`: the exporter holds one zero-copy read transaction for a whole
`cat`. An HTTP client decides how fast a response drains, and a read transaction held
across awaits on the event loop would hold off the map resize of the block writer
(store/txn_gate.py), which then blocks every later transaction on the loop: a slow
client could stall the daemon. Here every generator step opens a transaction, copies
one block out, closes it and only then yields; the copy is the price.

Invariants:

- Every block is hash-checked (`Reader.read`) and passed to the serving policy before
  a byte of it is used or yielded; a refused block raises `NotServed`, like a missing
  one (a client cannot tell private data from absent data).
- File walks check UnixFS sizes as the exporter does: a node's `Data` plus its
  `blocksizes` is its `filesize`, and every child delivers exactly the size its parent
  declares for it (a raw leaf's length, a node's `filesize`), so a range read that
  skips children still yields exactly the bytes it promises.
- Memory is bounded by one block per step plus the walk's stack (at most the links of
  one node per level); `walk_file` and `dag_blocks` never hold the file.
- A generator never yields inside a transaction: it may be resumed on another thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from overlay.core.cid import DAG_PB, RAW, Cid
from overlay.core.errors import ColonyError, InvalidCid, WireError
from store.blockstore import BlockNotFound, BlockStore, Reader
from store.paths import ContentPath, PathError, resolve
from store.unixfs import DataType, PBLink, PBNode, UnixFSData, decode_pbnode, decode_unixfs

#: A check run on every block before it is served: raises `NotServed` to refuse it.
Policy = Callable[[Cid], None]
#: Bytes read between releases of mapped LMDB pages (RSS stays flat; blockstore.py).
#: Blocks are copied out, so the mapping is only ever read once: release it often.
RELEASE_EVERY_BYTES = 8 * 1024 * 1024
#: Shard nodes a HAMT directory listing reads at most (as store/paths.py).
MAX_HAMT_NODES = 4096
#: Blocks a `dag-scope=all` walk remembers for de-duplication (CAR `dups=n`).
MAX_DAG_BLOCKS = 4_000_000


class NotServed(ColonyError):
    """A block this gateway does not serve: not stored here, or not public."""

    def __init__(self, cid: Cid) -> None:
        self.cid = cid
        super().__init__(f"{cid} is not available from this gateway")


class BadContent(ColonyError):
    """A DAG that is not valid UnixFS where UnixFS was needed (sizes, types, links)."""


def serve_all(cid: Cid) -> None:
    """The policy of a node that serves every block it holds."""


class _RecordingReader(Reader):
    """A `Reader` that asks the policy first and notes every block read (the blocks
    a path walk needed), so a refused directory reveals nothing of its entries."""

    __slots__ = ("policy", "seen")

    def __init__(self, store: BlockStore, txn: Any, policy: Policy) -> None:
        super().__init__(store, txn)
        self.policy = policy
        self.seen: list[Cid] = []

    def read(self, cid: Cid, *, verify: bool = True, context: str = "") -> memoryview:
        self.policy(cid)
        mv = super().read(cid, verify=verify, context=context)
        if cid not in self.seen:
            self.seen.append(cid)
        return mv


@dataclass(frozen=True, slots=True)
class Resolved:
    """A content path walked: the CID of each logical segment and the blocks read."""

    path: ContentPath
    #: The root, then the CID each segment resolved to (X-Ipfs-Roots).
    roots: tuple[Cid, ...]
    #: Blocks read to walk the path (directories, HAMT shards), in order.
    path_blocks: tuple[Cid, ...]

    @property
    def target(self) -> Cid:
        return self.roots[-1]


def resolve_path(store: BlockStore, path: ContentPath, policy: Policy) -> Resolved:
    """Walk `path` one segment at a time (store/paths.resolve), noting each CID."""
    roots = [path.root]
    with store.reader() as r0:
        rr = _RecordingReader(store, r0.txn, policy)
        for i, seg in enumerate(path.segments):
            try:
                roots.append(resolve(rr, ContentPath(roots[-1], (seg,))))
            except BlockNotFound as e:
                raise NotServed(e.cid) from None
            except PathError as e:
                raise PathError(f"{e} (resolving {path.prefix(i + 1)})") from None
    return Resolved(path, tuple(roots), tuple(rr.seen))


def read_block(store: BlockStore, cid: Cid, policy: Policy) -> bytes:
    """One block, hash-checked and allowed by `policy`, copied out of the store."""
    policy(cid)
    try:
        with store.reader() as r:
            return bytes(r.read(cid))
    except BlockNotFound:
        raise NotServed(cid) from None


# ---------------------------------------------------------------- nodes


@dataclass(frozen=True, slots=True)
class Node:
    """One block and what UnixFS says it is."""

    cid: Cid
    block: bytes
    #: "file", "directory", "hamt", "symlink", or "other" (a codec we do not read)
    kind: str
    #: File bytes for files and symlinks; block length otherwise.
    size: int
    pb: PBNode | None = None
    fs: UnixFSData | None = None


def decode_node(cid: Cid, block: bytes) -> Node:
    if cid.codec == RAW:
        return Node(cid, block, "file", len(block))
    if cid.codec != DAG_PB:
        return Node(cid, block, "other", len(block))
    try:
        pb = decode_pbnode(block)
        fs = decode_unixfs(pb.data if pb.data is not None else b"")
    except WireError as e:
        raise BadContent(f"{cid} is not valid dag-pb/UnixFS: {e}") from None
    kind = {DataType.FILE: "file", DataType.RAW: "file", DataType.DIRECTORY: "directory",
            DataType.HAMT_SHARD: "hamt", DataType.SYMLINK: "symlink"}.get(fs.type, "other")
    size = fs.file_size() if kind == "file" else len(fs.data) if kind == "symlink" \
        else len(block)
    return Node(cid, block, kind, size, pb, fs)


def load_node(store: BlockStore, cid: Cid, policy: Policy) -> Node:
    return decode_node(cid, read_block(store, cid, policy))


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    cid: Cid
    tsize: int


def _link_cid(lk: PBLink, parent: Cid) -> Cid:
    try:
        return Cid.from_bytes(lk.hash)
    except InvalidCid as e:
        raise BadContent(f"{parent} has a link that is not a CID: {e}") from None


def dir_entries(store: BlockStore, node: Node, policy: Policy) -> list[Entry]:
    """A directory's entries in link order; a HAMT directory's by a bounded scan of
    its shards (sub-shards are links named with exactly the bucket prefix)."""
    assert node.pb is not None and node.fs is not None
    if node.kind == "directory":
        return [Entry(lk.name or "", _link_cid(lk, node.cid), lk.tsize or 0)
                for lk in node.pb.links]
    out: list[Entry] = []
    stack = [node]
    seen = 0
    while stack:
        shard = stack.pop()
        seen += 1
        if seen > MAX_HAMT_NODES:
            raise BadContent(f"{node.cid}: HAMT directory larger than {MAX_HAMT_NODES} shards")
        assert shard.pb is not None and shard.fs is not None
        fanout = shard.fs.fanout or 0
        if shard.kind != "hamt" or fanout < 2 or fanout & (fanout - 1):
            raise BadContent(f"{shard.cid} inside HAMT directory {node.cid} is not a shard")
        pad = len(f"{fanout - 1:X}")
        subs: list[Node] = []
        for lk in shard.pb.links:
            name = lk.name or ""
            if len(name) == pad:
                subs.append(load_node(store, _link_cid(lk, shard.cid), policy))
            elif len(name) > pad:
                out.append(Entry(name[pad:], _link_cid(lk, shard.cid), lk.tsize or 0))
        stack.extend(reversed(subs))
    return sorted(out, key=lambda e: e.name)


def find_entry(store: BlockStore, node: Node, name: str, policy: Policy) -> Cid | None:
    for e in dir_entries(store, node, policy):
        if e.name == name:
            return e.cid
    return None


# ---------------------------------------------------------------- file bytes


@dataclass(slots=True)
class _Pending:
    cid: Cid
    offset: int  # file offset of this node's first byte
    expect: int | None  # size its parent declares; None for the root


def walk_file(
    store: BlockStore, root: Cid, start: int, end: int, policy: Policy
) -> Iterator[tuple[Cid, bytes, memoryview]]:
    """(cid, block, the file bytes in [start, end) this block holds), depth-first.

    Only blocks whose byte range meets [start, end) are read (and the nodes above
    them); internal nodes yield an empty or partial slice of their inline `Data`."""
    stack = [_Pending(root, 0, None)]
    since = 0
    while stack:
        p = stack.pop()
        block = read_block(store, p.cid, policy)
        since += len(block)
        if since >= RELEASE_EVERY_BYTES:
            store.release_mapped_pages()
            since = 0
        node = decode_node(p.cid, block)
        if node.kind != "file":
            where = "" if p.cid == root else f" inside file {root}"
            raise BadContent(f"{p.cid}{where} is a {node.kind}, not file data")
        if p.expect is not None and node.size != p.expect:
            raise BadContent(f"{p.cid} holds {node.size} bytes but its parent says {p.expect}")
        if node.pb is None or node.fs is None:  # raw leaf
            yield p.cid, block, _clip(memoryview(block), p.offset, start, end)
            continue
        links, fs = node.pb.links, node.fs
        if links and len(fs.blocksizes) != len(links):
            raise BadContent(f"{p.cid}: {len(links)} links but {len(fs.blocksizes)} blocksizes")
        if len(fs.data) + sum(fs.blocksizes) != fs.file_size():
            raise BadContent(f"{p.cid}: filesize {fs.file_size()} disagrees with blocksizes")
        yield p.cid, block, _clip(memoryview(fs.data), p.offset, start, end)
        off = p.offset + len(fs.data)
        children = []
        for lk, size in zip(links, fs.blocksizes, strict=False):
            if off < end and off + size > start:
                children.append(_Pending(_link_cid(lk, p.cid), off, size))
            off += size
        stack.extend(reversed(children))
    store.release_mapped_pages()


def _clip(data: memoryview, offset: int, start: int, end: int) -> memoryview:
    """The part of `data` (file bytes from `offset`) inside [start, end)."""
    lo = max(start - offset, 0)
    hi = min(end - offset, len(data))
    return data[lo:hi] if hi > lo else data[:0]


def file_bytes(
    store: BlockStore, root: Cid, start: int, end: int, policy: Policy
) -> Iterator[memoryview]:
    """The file's bytes in [start, end), as views of copied blocks."""
    for _, _, piece in walk_file(store, root, start, end, policy):
        if len(piece):
            yield piece


# ---------------------------------------------------------------- CAR blocks


def dag_blocks(
    store: BlockStore, root: Cid, policy: Policy, *, dedup: bool = True
) -> Iterator[tuple[Cid, bytes]]:
    """Every block of the DAG under `root`, depth-first, children in link order,
    each once (CAR `order=dfs; dups=n`) or each time it is reached (`dedup=False`,
    `dups=y`), links from the reference index."""
    seen: set[bytes] = set()
    stack = [root]
    since = 0
    walked = 0
    while stack:
        cid = stack.pop()
        if dedup and cid.multihash in seen:
            continue
        walked += 1
        if walked > MAX_DAG_BLOCKS:
            raise BadContent(f"DAG {root} has more than {MAX_DAG_BLOCKS} blocks")
        if dedup:
            seen.add(cid.multihash)
        policy(cid)
        try:
            with store.reader() as r:
                block = bytes(r.read(cid, context=f"part of {root}"))
                links = r.links(cid.multihash) if cid.codec == DAG_PB else None
        except BlockNotFound:
            raise NotServed(cid) from None
        since += len(block)
        if since >= RELEASE_EVERY_BYTES:
            store.release_mapped_pages()
            since = 0
        yield cid, block
        if links:
            stack.extend(reversed([Cid.from_bytes(lk) for lk in links]))
    store.release_mapped_pages()


def entity_blocks(
    store: BlockStore, node: Node, byte_range: tuple[int, int] | None, policy: Policy
) -> Iterator[tuple[Cid, bytes]]:
    """`dag-scope=entity`: a file's blocks (only those `byte_range` needs), a
    directory's own block, a HAMT directory's shard nodes; any other block alone."""
    if node.kind == "file":
        lo, hi = byte_range if byte_range is not None else (0, node.size)
        if hi <= lo:  # empty range: the root block lets the client see why
            yield node.cid, node.block
            return
        for cid, block, _ in walk_file(store, node.cid, lo, hi, policy):
            yield cid, block
    elif node.kind == "hamt":
        yield node.cid, node.block
        stack = [node]
        while stack:
            shard = stack.pop()
            assert shard.pb is not None and shard.fs is not None
            pad = len(f"{(shard.fs.fanout or 256) - 1:X}")
            for lk in shard.pb.links:
                if lk.name is not None and len(lk.name) == pad:
                    sub = load_node(store, _link_cid(lk, shard.cid), policy)
                    yield sub.cid, sub.block
                    stack.append(sub)
    else:
        yield node.cid, node.block


__all__ = ["BadContent", "Entry", "Node", "NotServed", "Policy", "Resolved", "dag_blocks",
           "decode_node", "dir_entries", "entity_blocks", "file_bytes", "load_node",
           "read_block", "resolve_path", "serve_all", "walk_file"]
