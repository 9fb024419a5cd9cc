"""Streaming UnixFS export: `cat`, `ls`, `get` over DAGs in the block store.

A file is read depth-first, left to right, with an explicit stack of link lists (at
most 174 entries per level), so memory does not depend on file size. Inside one
zero-copy read transaction each block is hash-checked against the CID that named it
before a byte of it is used (a corrupt or missing block raises `CorruptBlock` /
`BlockNotFound` naming that CID and the root), and file payloads are handed to the
caller as memoryviews into the LMDB map — no copy until the caller writes them.

Every DAG is treated as untrusted (it may have come from a peer): node types are
checked, each node's ``blocksizes`` must add up to what its children deliver, and
directory entry names must be plain names (no ``/``, ``.``, ``..``, NUL) so `get`
can never write outside its target directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlay.core.cid import DAG_PB, RAW, Cid
from overlay.core.errors import ColonyError, InvalidCid, WireError
from overlay.core.multiformats import SHA2_256
from store import hamt
from store.blockstore import BlockStore, Reader, view_address
from store.importer import MAX_DIR_DEPTH
from store.unixfs import DataType, PBLink, PBNode, UnixFSData, decode_pbnode, decode_unixfs
from store.verify_ahead import VERIFY_AHEAD_BYTES, RawLeaf, verified_ahead

#: Bytes streamed between releases of mapped LMDB pages (bounds RSS; see blockstore).
RELEASE_EVERY_BYTES = 16 * 1024 * 1024
#: Every this many releases, all of the map is released (see `Exporter._stream`).
FULL_RELEASE_EVERY = 8


class BadDag(ColonyError):
    """A DAG that is not valid UnixFS (wrong node type, sizes that disagree, bad names)."""


class NotAFile(BadDag):
    """`cat` of a directory or symlink."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    cid: Cid
    kind: str  # "file" | "directory" | "symlink" | "raw-block"
    size: int  # file bytes for files; cumulative Tsize for directories
    block_size: int
    links: int


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    cid: Cid
    tsize: int
    kind: str
    size: int


def _check_name(name: str | None, parent: Cid) -> str:
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise BadDag(f"directory {parent} has an entry with an unsafe name {name!r}")
    return name


class Exporter:
    def __init__(self, store: BlockStore, *, verify_ahead: int = VERIFY_AHEAD_BYTES) -> None:
        self.store = store
        #: Bytes of raw leaves `cat`/`get` look up and hash ahead of the writer (0: none).
        self.verify_ahead = verify_ahead

    # ------------------------------------------------------------ nodes

    @staticmethod
    def _node(
        r: Reader, cid: Cid, root: Cid
    ) -> tuple[memoryview, PBNode | None, UnixFSData | None]:
        ctx = "" if cid == root else f"part of {root}"
        block = r.read(cid, context=ctx)
        if cid.codec == RAW:
            return block, None, None
        try:
            node = decode_pbnode(block)
            if node.data is None:
                raise BadDag(f"dag-pb node {cid} has no UnixFS Data")
            return block, node, decode_unixfs(node.data)
        except WireError as e:
            raise BadDag(f"block {cid} is not valid dag-pb/UnixFS: {e}") from None

    def stat(self, cid: Cid) -> NodeInfo:
        with self.store.reader() as r:
            return self._stat(r, cid)

    def _stat(self, r: Reader, cid: Cid) -> NodeInfo:
        block, node, u = self._node(r, cid, cid)
        if node is None or u is None:
            return NodeInfo(cid, "file", len(block), len(block), 0)
        if u.type in (DataType.FILE, DataType.RAW):
            return NodeInfo(cid, "file", u.file_size(), len(block), len(node.links))
        if u.type in (DataType.DIRECTORY, DataType.HAMT_SHARD):
            tsize = len(block) + sum(lk.tsize or 0 for lk in node.links)
            return NodeInfo(cid, "directory", tsize, len(block), len(node.links))
        if u.type is DataType.SYMLINK:
            return NodeInfo(cid, "symlink", len(u.data), len(block), 0)
        raise BadDag(f"{cid} is a UnixFS {u.type.name} node, which Colony does not read")

    # ------------------------------------------------------------ files

    def iter_file(self, r: Reader, root: Cid, *,
                  verify_ahead: int = 0) -> Generator[memoryview, None, None]:
        """Yield the file's bytes as views valid while `r` is open, each hash-checked.

        With `verify_ahead` > 0, the walk runs on its own thread up to that many bytes
        ahead of the piece being yielded and raw leaves are hashed by a small thread pool
        (store/verify_ahead.py); the caller must then close the iterator before `r` ends
        (`_stream` does)."""
        items = self._walk(r, root)
        if verify_ahead <= 0:
            for item in items:
                yield item if isinstance(item, memoryview) else r.read(item.cid, context=item.ctx)
            return
        yield from verified_ahead(items, verify_ahead)

    def _walk(self, r: Reader, root: Cid) -> Iterator[memoryview | RawLeaf]:
        """The file's pieces in order: verified views, and sha2-256 raw leaves whose
        hash is not checked yet (`RawLeaf`; the caller checks before using a byte)."""
        _, node, u = self._node(r, root, root)
        if node is None:
            yield r.read(root, verify=False)  # already verified by _node
            return
        assert u is not None
        if u.type is DataType.DIRECTORY:
            raise NotAFile(f"{root} is a directory; use `colony ls` or `colony get`")
        if u.type is DataType.SYMLINK:
            raise NotAFile(f"{root} is a symlink to {bytes(u.data).decode(errors='replace')!r}")
        ctx = f"part of {root}"  # formatted once: str(Cid) is base32 encoding
        # Stack of (node, its UnixFS data, its CID, index of the next link to read).
        stack: list[tuple[PBNode, UnixFSData, Cid, int]] = []
        total = 0
        expect = u.file_size()
        cur: tuple[PBNode, UnixFSData, Cid] | None = (node, u, root)
        while cur is not None or stack:
            if cur is not None:
                n, d, c = cur
                cur = None
                if d.type not in (DataType.FILE, DataType.RAW):
                    raise BadDag(f"{c} (inside file {root}) is a {d.type.name}, not file data")
                if n.links and len(d.blocksizes) != len(n.links):
                    raise BadDag(f"{c}: {len(n.links)} links but {len(d.blocksizes)} blocksizes")
                if len(d.data) + sum(d.blocksizes) != d.file_size():
                    raise BadDag(f"{c}: filesize {d.file_size()} disagrees with its blocksizes")
                if len(d.data):
                    total += len(d.data)
                    yield memoryview(d.data)
                if n.links:
                    stack.append((n, d, c, 0))
                continue
            n, d, c, i = stack.pop()
            if i >= len(n.links):
                continue
            stack.append((n, d, c, i + 1))
            try:
                child = Cid.from_bytes(n.links[i].hash)
            except ColonyError as e:
                raise BadDag(f"{c}: link {i} is not a CID: {e}") from None
            before = total
            if child.codec == RAW:
                if child.hash_code == SHA2_256:
                    block = r.read(child, verify=False, context=ctx)
                    total += len(block)
                    yield RawLeaf(child, block, ctx)
                else:
                    block = r.read(child, context=ctx)
                    total += len(block)
                    yield block
            else:
                _, cn, cu = self._node(r, child, root)
                assert cn is not None and cu is not None
                if cn.links:
                    # Descend; its own blocksizes then account for every byte below it.
                    if cu.file_size() != d.blocksizes[i]:
                        raise BadDag(
                            f"{child} declares {cu.file_size()} bytes but its parent {c} "
                            f"says {d.blocksizes[i]}"
                        )
                    cur = (cn, cu, child)
                    continue
                if cu.type not in (DataType.FILE, DataType.RAW):
                    raise BadDag(f"{child} (inside file {root}) is not file data")
                total += len(cu.data)
                if len(cu.data):
                    yield memoryview(cu.data)
            if total - before != d.blocksizes[i]:
                raise BadDag(
                    f"{child} holds {total - before} bytes but its parent {c} says "
                    f"{d.blocksizes[i]}"
                )
        if total != expect:
            raise BadDag(f"file {root} delivered {total} bytes but declares {expect}")

    def cat(
        self,
        cid: Cid,
        write: Callable[[memoryview], Any],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream the file `cid` to `write`; returns the number of bytes."""
        with self.store.reader() as r:
            return self._stream(r, cid, write, progress)

    def _stream(self, r: Reader, cid: Cid, write: Callable[[memoryview], Any],
                progress: Callable[[int], None] | None) -> int:
        """Write the file's pieces, unmapping the pages written every
        RELEASE_EVERY_BYTES so RSS stays flat however large the file.

        Only the address span of what was written is unmapped while it is about that
        size (a file's blocks lie in file order when it was imported), so the pages
        the walk read ahead stay mapped; a scattered span, and every
        FULL_RELEASE_EVERY-th release, unmap the whole map (what the kernel mapped
        around the faults, too)."""
        n = 0
        since = 0
        releases = 0
        lo, hi = -1, -1  # address span of the pieces written since the last release
        # closing(): the verifying threads must be done before the transaction ends,
        # also when `write` raises (a traceback would keep the generator alive).
        with contextlib.closing(self.iter_file(r, cid, verify_ahead=self.verify_ahead)) as it:
            for piece in it:
                write(piece)
                size = len(piece)
                n += size
                since += size
                at = view_address(piece)
                lo = at if lo < 0 else min(lo, at)
                hi = max(hi, at + size)
                if since >= RELEASE_EVERY_BYTES:
                    releases += 1
                    whole = releases % FULL_RELEASE_EVERY == 0 or hi - lo > 2 * since
                    self.store.release_mapped_pages(None if whole else (lo, hi))
                    since = 0
                    lo, hi = -1, -1
                if progress is not None:
                    progress(size)
        self.store.release_mapped_pages()
        return n

    def read_all(self, cid: Cid) -> bytes:
        """Whole file in memory (tests and small files only)."""
        parts: list[bytes] = []
        self.cat(cid, lambda mv: parts.append(bytes(mv)))
        return b"".join(parts)

    # ------------------------------------------------------------ directories

    def ls(self, cid: Cid) -> list[DirEntry]:
        """A directory's entries (a HAMT-sharded one's sorted by name, as flat ones are)."""
        with self.store.reader() as r:
            out = []
            for name, lk in self._entries(r, cid):
                child = Cid.from_bytes(lk.hash)
                info = self._stat(r, child)
                out.append(DirEntry(name, child, lk.tsize or 0, info.kind, info.size))
            return out

    def _entries(self, r: Reader, cid: Cid) -> list[tuple[str, PBLink]]:
        """(checked name, link) of a flat or HAMT-sharded directory; BadDag otherwise."""
        _, node, u = self._node(r, cid, cid)
        if node is None or u is None:
            raise BadDag(f"{cid} is not a directory")
        if u.type is DataType.DIRECTORY:
            return [(_check_name(lk.name, cid), lk) for lk in node.links]
        if u.type is not DataType.HAMT_SHARD:
            raise BadDag(f"{cid} is not a directory")

        def read(c: Cid) -> tuple[PBNode, UnixFSData]:
            _, n, d = self._node(r, c, cid)
            if n is None or d is None:
                raise BadDag(f"{c} inside HAMT directory {cid} is not a dag-pb node")
            return n, d

        try:
            found = [(_check_name(name, cid), lk) for name, lk in hamt.leaves(read, cid)]
        except (hamt.HamtError, InvalidCid) as e:
            raise BadDag(str(e)) from None
        return sorted(found, key=lambda e: e[0].encode("utf-8"))

    def get(
        self, cid: Cid, out: Path, progress: Callable[[int], None] | None = None
    ) -> NodeInfo:
        """Write the file, directory tree or symlink `cid` to the new path `out`."""
        if out.exists() or out.is_symlink():
            raise BadDag(f"{out} already exists; choose a new output path")
        with self.store.reader() as r:
            info = self._stat(r, cid)
            self._get(r, cid, out, progress, 0)
        return info

    def _get(
        self, r: Reader, cid: Cid, out: Path, progress: Callable[[int], None] | None, depth: int
    ) -> None:
        if depth > MAX_DIR_DEPTH:
            raise BadDag(f"{cid}: directories nested deeper than {MAX_DIR_DEPTH}")
        _, node, u = self._node(r, cid, cid)
        if node is not None and u is not None and u.type in (DataType.DIRECTORY,
                                                              DataType.HAMT_SHARD):
            out.mkdir()
            for name, lk in self._entries(r, cid):
                self._get(r, Cid.from_bytes(lk.hash), out / name, progress, depth + 1)
            return
        if node is not None and u is not None and u.type is DataType.SYMLINK:
            os.symlink(bytes(u.data), out)
            return
        with open(out, "xb") as f:
            self._stream(r, cid, f.write, progress)


__all__ = ["DAG_PB", "VERIFY_AHEAD_BYTES", "BadDag", "DirEntry", "Exporter", "NodeInfo",
           "NotAFile"]
