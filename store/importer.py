"""Streaming UnixFS import: files and directories to a balanced dag-pb DAG.

Produces the CIDs `ipfs add` produces (kubo/boxo importer, ipfs/specs UNIXFS.md):

- fixed 256 KiB chunks (store/chunker.py);
- CIDv0 (kubo's default): leaves are dag-pb nodes holding UnixFS ``File`` Data with
  the chunk and its ``filesize``; CIDv1: raw leaves (codec 0x55), dag-pb parents.
  ``--cid-version 1`` implies raw leaves in kubo; raw leaves are always CIDv1;
- balanced layout: leaves are grouped 174 to a parent, parents 174 to a grandparent,
  and so on; the last group of a level may hold a single child and is still wrapped
  (kubo's ``balanced.Layout`` fills each subtree before starting the next, which gives
  the same tree as this bottom-up grouping). A file of one chunk is that chunk's leaf;
- a parent's UnixFS Data is ``File`` with ``filesize`` and one ``blocksizes`` entry per
  child (the file bytes below it); its links are unnamed (``Name = ""``) and carry the
  child's ``Tsize`` (block length plus the Tsize of all its links);
- directories: UnixFS ``Directory``, links named by entry, sorted by UTF-8 bytes;
  symlinks inside a directory become UnixFS ``Symlink`` nodes (kubo's default), while
  a path given on the command line is followed.

Streaming and memory: the builder keeps at most 174 pending links per tree level
(a 2 GiB file has three levels) plus one batch of blocks for the store, so memory is
independent of file size. Every block is hashed exactly once, when its CID is made.

Interruption: blocks reach LMDB in whole-batch transactions and `put_many` never
overwrites, so re-running an interrupted import recomputes the CIDs and writes only
what is missing.

Speed and acknowledgement: batches are committed by a writer thread
(store/batch_writer.py) while this thread reads and hashes the next chunks, which
roughly doubled import speed (bench/store.py). `add_*` return, and `on_entry` sees an
import's root, only after every block is committed (fsync'd with the store's default
sync), so an acknowledged add survives ``kill -9`` and power loss.

Directories above kubo's 256 KiB sharding threshold are written as HAMT shard trees
exactly as kubo and helia write them (store/hamt.py), so their CIDs are `ipfs add`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from overlay.core.cid import DAG_PB, RAW, Cid
from overlay.core.errors import ColonyError
from overlay.core.multiformats import encode_varint
from store.batch_writer import BatchWriter
from store.blockstore import BlockStore
from store.chunker import (
    DEFAULT_CHUNK_SIZE,
    Readable,
    check_chunk_size,
    chunk_bytes,
    chunks,
)
from store.hamt import build_shard, should_shard
from store.unixfs import DataType, encode_link, encode_node, encode_unixfs

#: Links per dag-pb node in the balanced layout (kubo's DefaultLinksPerBlock).
DEFAULT_MAX_LINKS = 174
#: Deepest directory nesting we follow (guards the recursion; kubo has no deeper trees).
MAX_DIR_DEPTH = 512

_DIR_DATA = encode_unixfs(DataType.DIRECTORY)


class ImportPathError(ColonyError):
    """A path given to `add` that cannot be imported (missing, unreadable, special)."""


@dataclass(frozen=True, slots=True)
class ImportOptions:
    cid_version: int = 1
    raw_leaves: bool | None = None  # None: raw leaves exactly when cid_version == 1
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_links: int = DEFAULT_MAX_LINKS
    batch_blocks: int = 64
    batch_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.cid_version not in (0, 1):
            raise ValueError(f"cid version must be 0 or 1, not {self.cid_version}")
        check_chunk_size(self.chunk_size)
        if self.max_links < 2:
            raise ValueError("a balanced DAG needs at least 2 links per node")

    @property
    def leaves_are_raw(self) -> bool:
        return self.cid_version == 1 if self.raw_leaves is None else self.raw_leaves


@dataclass(frozen=True, slots=True)
class Added:
    """One imported file, directory or symlink."""

    path: str  # as given / relative inside the imported tree ("" for a stream)
    cid: Cid
    size: int  # file bytes (files), cumulative DAG bytes (directories)
    tsize: int  # cumulative DAG size (what a parent link's Tsize says)
    kind: str  # "file" | "directory" | "symlink"


class BlockSink:
    """Collects blocks into batches and hands each to a `BatchWriter` (one LMDB write
    transaction per batch, committed on the writer's thread while hashing goes on)."""

    def __init__(self, store: BlockStore | None, batch_blocks: int, batch_bytes: int) -> None:
        self.store = store
        self.batch_blocks = batch_blocks
        self.batch_bytes = batch_bytes
        self._writer = BatchWriter(store) if store is not None else None
        self._batch: list[tuple[Cid, bytes, list[bytes] | None]] = []
        self._bytes = 0
        self.blocks = 0
        self.bytes = 0

    @property
    def new_blocks(self) -> int:
        """Blocks committed so far that the store did not already hold."""
        return 0 if self._writer is None else self._writer.new_blocks

    def put(self, cid: Cid, block: bytes, links: list[bytes] | None) -> None:
        self.blocks += 1
        self.bytes += len(block)
        if self._writer is None:
            return
        self._batch.append((cid, block, links))
        self._bytes += len(block)
        if len(self._batch) >= self.batch_blocks or self._bytes >= self.batch_bytes:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._writer is not None and self._batch:
            self._writer.submit(self._batch)
        self._batch = []
        self._bytes = 0

    def flush(self) -> None:
        """Commit every pending block and wait for it: after this returns the blocks
        are in the store (and on disk, with the store's default sync)."""
        try:
            self._hand_over()
        finally:
            if self._writer is not None:
                self._writer.drain()

    def flush_after_error(self) -> None:
        """On an import error: commit what was hashed (a retry resumes from it) and stop
        the writer thread; a second error here must not hide the first."""
        with contextlib.suppress(Exception):
            self.flush()


class _FileDag:
    """Balanced-layout builder fed one chunk at a time (bounded by 174 × depth)."""

    __slots__ = ("imp", "leaves", "levels")

    def __init__(self, imp: Importer) -> None:
        self.imp = imp
        # levels[i]: pending (cid bytes, tsize, file bytes) children at height i.
        self.levels: list[list[tuple[bytes, int, int]]] = [[]]
        self.leaves = 0

    def add_chunk(self, chunk: bytes) -> None:
        imp = self.imp
        n = len(chunk)
        if imp.raw:
            cid = Cid(1, RAW, hashlib.sha256(chunk).digest())
            imp.sink.put(cid, chunk, None)
            entry = (cid.to_bytes(), n, n)
        else:
            # PBNode{Data: UnixFS{Type: File, Data: chunk, filesize: n}} built in one join.
            vn = encode_varint(n)
            inner_len = 2 + (1 + len(vn) + n if n else 0) + 1 + len(vn)
            parts = [b"\x0a", encode_varint(inner_len), b"\x08\x02"]
            if n:
                parts += [b"\x12", vn, chunk]
            parts += [b"\x18", vn]
            block = b"".join(parts)
            cid = Cid(imp.version, DAG_PB, hashlib.sha256(block).digest())
            imp.sink.put(cid, block, [])
            entry = (cid.to_bytes(), len(block), n)
        self.leaves += 1
        self._push(0, entry)

    def _push(self, height: int, entry: tuple[bytes, int, int]) -> None:
        while True:
            level = self.levels[height]
            level.append(entry)
            if len(level) < self.imp.options.max_links:
                return
            # A full group: close it now (same tree as grouping at the end).
            entry = self._parent(level)
            self.levels[height] = []
            height += 1
            if height == len(self.levels):
                self.levels.append([])

    def _parent(self, children: list[tuple[bytes, int, int]]) -> tuple[bytes, int, int]:
        imp = self.imp
        links = [encode_link(c, "", t) for c, t, _ in children]
        sizes = [f for _, _, f in children]
        filesize = sum(sizes)
        block = encode_node(links, encode_unixfs(DataType.FILE, b"", filesize, sizes))
        cid = Cid(imp.version, DAG_PB, hashlib.sha256(block).digest())
        imp.sink.put(cid, block, [c for c, _, _ in children])
        return cid.to_bytes(), len(block) + sum(t for _, t, _ in children), filesize

    def finish(self) -> tuple[Cid, int, int]:
        """(root CID, root Tsize, file bytes)."""
        if self.leaves == 1:
            c, t, f = self.levels[0][0]
            return Cid.from_bytes(c), t, f
        height = 0
        while True:
            top = len(self.levels) - 1
            level = self.levels[height]
            if height == top and len(level) == 1:
                c, t, f = level[0]
                return Cid.from_bytes(c), t, f
            if level:
                entry = self._parent(level)
                self.levels[height] = []
                if height + 1 == len(self.levels):
                    self.levels.append([])
                self._push(height + 1, entry)
            height += 1


class Importer:
    """Import streams, byte strings and paths into a block store (or only hash them)."""

    def __init__(
        self,
        store: BlockStore | None,
        options: ImportOptions | None = None,
        *,
        progress: Callable[[int], None] | None = None,
        on_entry: Callable[[Added], None] | None = None,
    ) -> None:
        self.options = options or ImportOptions()
        self.version = self.options.cid_version
        self.raw = self.options.leaves_are_raw
        self.sink = BlockSink(store, self.options.batch_blocks, self.options.batch_bytes)
        self.progress = progress
        self.on_entry = on_entry
        self.warnings: list[str] = []
        #: The latest entry, reported to `on_entry` only once its blocks are committed.
        self._held: Added | None = None

    def _report(self, added: Added) -> None:
        """Report entries in order, holding back the newest: the last one an import
        makes is its root, and a root must not be shown before it is in the store
        (an "added <cid>" line is the user's acknowledgement)."""
        held, self._held = self._held, added
        if held is not None and self.on_entry is not None:
            self.on_entry(held)

    def flush(self) -> None:
        """Write pending blocks and wait for them (`add_*` do this before returning;
        `directory` and `symlink`, used to assemble trees by hand, leave it to the
        caller), then report the held-back entry."""
        self.sink.flush()
        held, self._held = self._held, None
        if held is not None and self.on_entry is not None:
            self.on_entry(held)

    # ------------------------------------------------------------ files

    def _file(self, pieces: Iterable[bytes], name: str) -> Added:
        dag = _FileDag(self)
        progress = self.progress
        for chunk in pieces:
            dag.add_chunk(chunk)
            if progress is not None and chunk:
                progress(len(chunk))
        cid, tsize, size = dag.finish()
        added = Added(name, cid, size, tsize, "file")
        self._report(added)
        return added

    def _committed(self, build: Callable[[], Added]) -> Added:
        """Run an import and return only once all its blocks are committed."""
        try:
            added = build()
        except BaseException:
            self._held = None  # not committed as a whole: never acknowledged
            self.sink.flush_after_error()
            raise
        self.flush()
        return added

    def add_stream(self, src: Readable, name: str = "") -> Added:
        return self._committed(lambda: self._file(chunks(src, self.options.chunk_size), name))

    def add_bytes(self, data: bytes, name: str = "") -> Added:
        return self._committed(
            lambda: self._file(chunk_bytes(data, self.options.chunk_size), name))

    # ------------------------------------------------------------ directories

    def directory(self, entries: list[tuple[str, Cid, int]], name: str = "",
                  dirs: frozenset[str] = frozenset()) -> Added:
        """Build a directory node from (name, cid, tsize) entries (any order); `dirs`
        names the entries that are directories (they do not count towards the HAMT
        threshold, as in kubo and helia: store/hamt.py). Above the threshold the
        directory is written as a HAMT shard tree, as `ipfs add` writes it."""
        names = set()
        for n, _, _ in entries:
            if not n or "/" in n or n in (".", "..") or n in names:
                raise ImportPathError(f"invalid or duplicate directory entry name {n!r}")
            names.add(n)
        ordered = sorted(entries, key=lambda e: e[0].encode("utf-8"))
        if should_shard(ordered, dirs, self.version):
            cid, tsize = build_shard(ordered, self.version, self.sink.put)
            added = Added(name, cid, tsize, tsize, "directory")
            self._report(added)
            return added
        links = [encode_link(c.to_bytes(), n, t) for n, c, t in ordered]
        block = encode_node(links, _DIR_DATA)
        cid = Cid(self.version, DAG_PB, hashlib.sha256(block).digest())
        self.sink.put(cid, block, [c.to_bytes() for _, c, _ in ordered])
        tsize = len(block) + sum(t for _, _, t in ordered)
        added = Added(name, cid, tsize, tsize, "directory")
        self._report(added)
        return added

    def symlink(self, target: str, name: str = "") -> Added:
        data = encode_unixfs(DataType.SYMLINK, os.fsencode(target))
        block = encode_node([], data)
        cid = Cid(self.version, DAG_PB, hashlib.sha256(block).digest())
        self.sink.put(cid, block, [])
        added = Added(name, cid, len(block), len(block), "symlink")
        self._report(added)
        return added

    # ------------------------------------------------------------ paths

    def add_path(self, path: Path | str, *, recursive: bool = False) -> Added:
        """Import a file, or with `recursive` a directory tree. The argument itself is
        followed if it is a symlink; symlinks inside a directory are stored as such."""
        p = Path(path)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise ImportPathError(f"{p}: no such file or directory") from None
        except OSError as e:
            raise ImportPathError(f"{p}: {e.strerror or e}") from None
        name = p.name or str(p)
        if stat.S_ISDIR(st.st_mode):
            if not recursive:
                raise ImportPathError(f"{p} is a directory; use -r to add a directory")
            return self._committed(lambda: self._dir(p, name, 0))
        return self._committed(lambda: self._path_file(p, st, name))

    def _path_file(self, p: Path, st: os.stat_result, display: str) -> Added:
        if not stat.S_ISREG(st.st_mode):
            raise ImportPathError(
                f"{p} is not a regular file, directory or symlink "
                f"(a {_kind(st.st_mode)}); refusing to import it"
            )
        try:
            f = open(p, "rb", buffering=0)  # noqa: SIM115 - closed below
        except OSError as e:
            raise ImportPathError(f"{p}: {e.strerror or e}") from None
        try:
            return self._file(chunks(f, self.options.chunk_size), display)
        except OSError as e:
            raise ImportPathError(f"{p}: read failed: {e.strerror or e}") from None
        finally:
            f.close()

    def _dir(self, p: Path, display: str, depth: int) -> Added:
        if depth > MAX_DIR_DEPTH:
            raise ImportPathError(f"{p}: directories nested deeper than {MAX_DIR_DEPTH}")
        try:
            with os.scandir(p) as it:
                names = sorted((e.name for e in it), key=os.fsencode)
        except OSError as e:
            raise ImportPathError(f"{p}: cannot list directory: {e.strerror or e}") from None
        entries: list[tuple[str, Cid, int]] = []
        subdirs: set[str] = set()
        for raw_name in names:
            try:
                name = os.fsencode(raw_name).decode("utf-8")
            except UnicodeDecodeError:
                raise ImportPathError(
                    f"{p / raw_name}: file name is not valid UTF-8 (UnixFS names are UTF-8)"
                ) from None
            child = p / raw_name
            sub = f"{display}/{name}"
            try:
                st = child.lstat()
            except OSError as e:
                raise ImportPathError(f"{child}: {e.strerror or e}") from None
            if stat.S_ISLNK(st.st_mode):
                added = self.symlink(os.readlink(child), sub)
            elif stat.S_ISDIR(st.st_mode):
                added = self._dir(child, sub, depth + 1)
            else:
                added = self._path_file(child, st, sub)
            entries.append((name, added.cid, added.tsize))
            if added.kind == "directory":
                subdirs.add(name)
        return self.directory(entries, display, frozenset(subdirs))


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"
