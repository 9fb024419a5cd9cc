"""The LMDB block store: blocks by multihash, a reference index, pins and counters.

One LMDB environment (``$COLONY_HOME/blocks``) holds four named databases:

``blocks``  multihash (34 bytes) → block bytes. Keyed by multihash, as kubo's
            datastore is since 0.12: the same bytes under a v0 and a v1 CID are one
            block.
``refs``    multihash of every dag-pb block → its links, each as a varint-length-
            prefixed binary CID (an empty value for a dag-pb block with no links).
            This is the reference index GC and recursive pins walk without decoding
            blocks; a key's presence also records that the block is dag-pb, so
            `repo verify` can name corrupt blocks by their proper CID.
``pins``    binary CID → pin record (see store/pins.py).
``meta``    ``b"blocks"``/``b"bytes"`` counters (u64 little-endian), kept in the same
            transaction as the puts and deletes they count; ``b"format"``.

Invariants:

- A block is written only as its key's preimage: `put_many` hashes nothing itself
  (callers hash each block exactly once, when they compute its CID) but every reader
  that hands bytes to a user checks them against the key (`read(..., verify=True)`).
- One write transaction per batch (`put_many`); a batch is all-or-nothing, so a
  ``kill -9`` leaves whole batches (LMDB is crash-safe: a torn commit is never seen).
- `put_many` never overwrites (``overwrite=False``): re-adding is a cheap no-op, which
  is what makes an interrupted import resumable.
- The map grows instead of failing: on ``MapFullError`` the batch is retried after
  doubling the map size; on ``MapResizedError`` (another process grew it) the new size
  is adopted. Either replaces the memory map, so it runs only while no transaction is
  open on any thread (store/txn_gate.py: every transaction goes through the gate).
- Reads are zero-copy: `reader()` opens a ``buffers=True`` transaction whose values are
  memoryviews into the map, valid until the transaction ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import hashlib
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from overlay.core.cid import DAG_PB, Cid
from overlay.core.errors import ColonyError, ConfigError
from overlay.core.multiformats import SHA2_256, decode_varint, encode_varint
from store.txn_gate import GateBusy, TxnGate
from store.unixfs import link_cids

FORMAT_VERSION = 1
_U64 = struct.Struct("<Q")
T = TypeVar("T")

_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE
try:
    _libc: Any = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
except (OSError, AttributeError):  # not Linux/glibc: page release is a no-op
    _libc = None

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
if _libc is not None and hasattr(_libc, "mallopt"):
    # Profiled: without MDB_WRITEMAP, LMDB mallocs a fresh buffer for every 256 KiB
    # value's overflow pages, and glibc serves allocations that large with a new mmap
    # each time (page faults + zeroing on every block; ~40 % of import time). Keeping
    # them on the heap, and the heap from being trimmed after each batch, lets the
    # buffers be reused. Process-wide, but only raises two glibc thresholds.
    _libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    _libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024 * 1024)


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (the stable buffer protocol struct)."""

    _fields_ = (("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p))


# A private handle (what ctypes.pythonapi is), so these argtypes are ours alone.
_pyapi = ctypes.PyDLL(None)
_get_buffer = _pyapi.PyObject_GetBuffer
_get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
_get_buffer.restype = ctypes.c_int
_release_buffer = _pyapi.PyBuffer_Release
_release_buffer.argtypes = (ctypes.POINTER(_PyBuffer),)


def view_address(view: memoryview) -> int:
    """The address of a (read-only) view's first byte: where a zero-copy read lies in
    the map, for `BlockStore.release_mapped_pages(span)`. ctypes cannot take the
    address of a read-only buffer, the buffer protocol can."""
    buf = _PyBuffer()
    if _get_buffer(view, ctypes.byref(buf), 0) != 0:
        raise TypeError("not a buffer")  # not reached: a memoryview is one
    try:
        return int(buf.buf or 0)
    finally:
        _release_buffer(ctypes.byref(buf))


#: Free bytes below which a failed commit is reported as a full disk (LMDB needs room
#: for a batch's pages plus its B-tree copies; 4 MiB is one import batch's order).
DISK_LOW_BYTES = 4 << 20
#: Largest map we will grow to before giving up (1 TiB; LMDB reserves address space).
MAX_MAP_SIZE = 1 << 40


class StoreError(ColonyError):
    """A block store operation that cannot be carried out."""


class BlockNotFound(StoreError):
    """The store does not hold a block the operation needs."""

    def __init__(self, cid: Cid, context: str = "") -> None:
        self.cid = cid
        where = f" ({context})" if context else ""
        super().__init__(f"block {cid} not found in the local store{where}")


class CorruptBlock(StoreError):
    """A stored block whose bytes no longer hash to its key."""

    def __init__(self, cid: Cid, context: str = "") -> None:
        self.cid = cid
        where = f" ({context})" if context else ""
        super().__init__(
            f"block {cid} is corrupt: its bytes do not hash to its CID{where}; "
            "run `colony repo verify` to list every damaged block"
        )


class StoreBusy(StoreError):
    """Another process holds the store lock (e.g. gc while an add runs)."""


class DiskFull(StoreError):
    """A write failed because the disk holding the store has no room left.

    LMDB aborts the failed transaction and keeps its last committed state (the meta
    page is written last), so nothing stored before is lost and the store works again
    once space is freed: tests/integration/test_store_full_disk.py."""


@dataclass(frozen=True, slots=True)
class RepoStat:
    blocks: int
    bytes: int
    pins: int
    map_size: int
    file_size: int
    path: str


def encode_links(cids: Iterable[bytes]) -> bytes:
    return b"".join(encode_varint(len(c)) + c for c in cids)


def decode_links(value: bytes | memoryview) -> list[bytes]:
    out: list[bytes] = []
    i = 0
    end = len(value)
    while i < end:
        n, i = decode_varint(value, i)
        out.append(bytes(value[i : i + n]))
        i += n
    return out


def key_cid(mh: bytes, is_dag_pb: bool) -> Cid:
    """The CID we show for a stored multihash (CIDv1 of the codec we recorded)."""
    return Cid.from_multihash(bytes(mh), DAG_PB if is_dag_pb else 0x55, 1)


class BlockStore:
    """An LMDB environment holding blocks, references, pins and counters."""

    def __init__(
        self,
        path: Path | str,
        *,
        initial_map_size_mib: int = 256,
        readahead: bool = True,
        sync: bool = True,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        elif not (self.path / "data.mdb").exists():
            raise StoreError(f"no block store at {self.path}")
        size = max(1, initial_map_size_mib) << 20
        data_file = self.path / "data.mdb"
        if data_file.exists():
            # Never open with a map smaller than the file (LMDB would grow it anyway).
            size = max(size, data_file.stat().st_size)
        try:
            self.env = lmdb.open(
                str(self.path),
                map_size=size,
                max_dbs=8,
                readahead=readahead,
                sync=sync,
                readonly=readonly,
                lock=True,
            )
        except lmdb.Error as e:
            raise StoreError(f"cannot open block store {self.path}: {e}") from None
        #: Every transaction enters through the gate, so the map is never replaced
        #: under an open one (store/txn_gate.py).
        self.gate = TxnGate()
        create = not readonly
        self._blocks = self.env.open_db(b"blocks", create=create)
        self._refs = self.env.open_db(b"refs", create=create)
        self.pins_db = self.env.open_db(b"pins", create=create)
        self._meta = self.env.open_db(b"meta", create=create)
        if not readonly:
            self._write(lambda txn: txn.put(b"format", _U64.pack(FORMAT_VERSION),
                                            db=self._meta, overwrite=False))
        self._lock_fd: int | None = None
        #: (gate.resizes, address ranges of data.mdb's mapping) for release_mapped_pages.
        self._mapped: tuple[int, list[tuple[int, int]]] | None = None

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.env.close()

    def __enter__(self) -> BlockStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def lock(self, exclusive: bool) -> Iterator[None]:
        """Advisory store lock: imports hold it shared, gc exclusive (kubo's GC lock)."""
        fd = os.open(self.path / "colony.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if exclusive:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StoreBusy(
                        f"block store {self.path} is in use by another command "
                        "(an add or gc is running); try again when it finishes"
                    ) from None
            else:
                fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def release_mapped_pages(self, span: tuple[int, int] | None = None) -> None:
        """Unmap this process's view of data.mdb pages (``madvise(MADV_DONTNEED)``):
        all of it, or only the addresses `span` = (lo, hi) of it (from `view_address`).

        Zero-copy reads fault file pages into the LMDB map, and the kernel also maps
        neighbouring cached pages (fault-around); all of it counts towards the process's
        RSS even though it is reclaimable page cache. Streaming a 2 GiB file would
        therefore show ~2 GiB of RSS. The map is read-only and shared (no MDB_WRITEMAP),
        so dropping the mappings loses nothing: a later access faults the page in again
        from the page cache. Streaming loops call this every few tens of MiB; a span
        spares the pages a reader has looked up ahead and not used yet (unmapping them
        costs a fault per 64 KiB again when they are used).
        """
        if _libc is None:
            return
        # The map moves only in a resize (set_mapsize, always through the gate), so
        # the ranges found in /proc/self/maps (≈ 2 ms to parse) are kept until the
        # next one. Holding the gate keeps a resize from running in between.
        with self.gate.txn():
            key = self.gate.resizes
            if self._mapped is None or self._mapped[0] != key:
                self._mapped = (key, self._map_ranges())
            for lo, hi in self._mapped[1]:
                if span is not None:  # page-aligned, within this mapping
                    lo = max(lo, span[0] & ~(_PAGE - 1))
                    hi = min(hi, (span[1] + _PAGE - 1) & ~(_PAGE - 1))
                if lo < hi:
                    _libc.madvise(lo, hi - lo, _MADV_DONTNEED)

    def _map_ranges(self) -> list[tuple[int, int]]:
        """Address ranges of this process's mappings of data.mdb."""
        target = str((self.path / "data.mdb").resolve())
        out: list[tuple[int, int]] = []
        try:
            with open("/proc/self/maps") as f:
                for ln in f:
                    if ln.rstrip("\n").endswith(target):
                        lo, hi = ln.split(None, 1)[0].split("-")
                        out.append((int(lo, 16), int(hi, 16)))
        except OSError:
            pass
        return out

    # ------------------------------------------------------------ transactions

    def _resize(self, fn: Callable[[], None]) -> None:
        """Replace the map (`fn` calls set_mapsize) with no transaction open anywhere."""
        try:
            self.gate.resize(fn)
        except GateBusy:
            raise StoreError(
                f"block store {self.path}: the map must grow, but this thread holds a "
                "read transaction; finish reading before writing"
            ) from None

    def _grow(self, seen: int) -> None:
        """Double the map, unless another thread already grew it past `seen`."""
        cur = self.env.info()["map_size"]
        if cur > seen:
            return
        if cur * 2 > MAX_MAP_SIZE:
            raise StoreError(f"block store {self.path} reached the {MAX_MAP_SIZE} byte limit")
        self.env.set_mapsize(cur * 2)

    def reserve(self, nbytes: int) -> None:
        """Grow the map (doubling, through the gate) until `nbytes` fit beyond the
        pages in use, so a write of that size will not need a resize mid-transaction.
        Call it with no transaction open on this thread (else StoreError)."""
        for _ in range(64):
            info = self.env.info()
            used = (info["last_pgno"] + 1) * self.env.stat()["psize"]
            if used + nbytes <= info["map_size"]:
                return
            self._resize(functools.partial(self._grow, info["map_size"]))
        raise StoreError(f"block store {self.path}: could not grow the map")

    def _write(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(txn)` in one write transaction, growing the map as needed."""
        for _ in range(64):  # doubling 64 times exceeds any address space
            seen = self.env.info()["map_size"]
            try:
                with self.gate.txn(), self.env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._resize(functools.partial(self._grow, seen))
            except lmdb.MapResizedError:
                self._resize(lambda: self.env.set_mapsize(0))  # another process grew it
            except lmdb.Error as e:
                raise self._write_failed(e) from None
        raise StoreError(f"block store {self.path}: could not grow the map")

    def _write_failed(self, e: lmdb.Error) -> StoreError:
        """A clear error for a failed commit. On a full disk LMDB reports ENOSPC, or EIO
        when a page write came back short (seen on tmpfs), so the free space decides."""
        try:
            st = os.statvfs(self.path)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = -1
        if 0 <= free < DISK_LOW_BYTES or "No space left" in str(e):
            return DiskFull(
                f"the disk holding the block store {self.path} is full ({free} bytes "
                "free): the write in progress was not stored and everything committed "
                "before it is intact; free some space and try again (an add resumes)")
        return StoreError(f"block store {self.path}: write failed: {e}")

    @contextlib.contextmanager
    def _read_txn(self, buffers: bool) -> Iterator[Any]:
        """A read transaction held through the gate (see `_write`)."""
        for _ in range(8):
            with self.gate.txn():
                try:
                    txn: Any = self.env.begin(buffers=True) if buffers else self.env.begin()
                except lmdb.MapResizedError:
                    pass  # adopt the size another process grew to, then retry
                else:
                    try:
                        yield txn
                    finally:
                        txn.abort()
                    return
            self._resize(lambda: self.env.set_mapsize(0))
        raise StoreError(f"block store {self.path}: the map keeps being resized")

    @contextlib.contextmanager
    def reader(self) -> Iterator[Reader]:
        """A zero-copy read transaction. Values are valid only inside the `with`."""
        with self._read_txn(buffers=True) as txn:
            yield Reader(self, txn)

    # ------------------------------------------------------------ writes

    def put_many(
        self, items: Sequence[tuple[Cid, bytes | memoryview, Sequence[bytes] | None]]
    ) -> int:
        """Store a batch of (cid, block, link cids) in one transaction.

        `links` may be None for a dag-pb block (then it is decoded here) and is ignored
        for raw blocks. The caller vouches that each block hashes to its CID. Returns
        how many blocks were new. Only sha2-256 blocks are stored: identity CIDs hold
        their data (skipped), any other multihash is refused (`UnverifiableHash`).
        """
        if any(cid.hash_code != SHA2_256 for cid, _, _ in items):
            for cid, data, _ in items:
                if cid.hash_code != SHA2_256 and not cid.verify(data):
                    raise CorruptBlock(cid, "refusing to store bytes that do not match the CID")
            items = [it for it in items if it[0].hash_code == SHA2_256]
            if not items:
                return 0

        def txn_fn(txn: Any) -> int:
            new = 0
            added = 0
            for cid, data, links in items:
                mh = cid.multihash
                if not txn.put(mh, data, db=self._blocks, overwrite=False):
                    continue
                new += 1
                added += len(data)
                if cid.codec == DAG_PB:
                    ls = link_cids(data) if links is None else links
                    txn.put(mh, encode_links(ls), db=self._refs)
            if new:
                self._bump(txn, new, added)
            return new

        return self._write(txn_fn)

    def put(self, cid: Cid, data: bytes | memoryview, *, verify: bool = True) -> bool:
        """Store one block (hash-checked unless the caller already did)."""
        if verify and not cid.verify(data):
            raise CorruptBlock(cid, "refusing to store bytes that do not match the CID")
        return self.put_many([(cid, data, None)]) == 1

    def _bump(self, txn: Any, blocks: int, nbytes: int) -> None:
        b = txn.get(b"blocks", db=self._meta)
        n = txn.get(b"bytes", db=self._meta)
        cb = _U64.unpack(b)[0] if b else 0
        cn = _U64.unpack(n)[0] if n else 0
        txn.put(b"blocks", _U64.pack(max(0, cb + blocks)), db=self._meta)
        txn.put(b"bytes", _U64.pack(max(0, cn + nbytes)), db=self._meta)

    def delete_many(self, mhs: Sequence[bytes]) -> tuple[int, int]:
        """Delete blocks (and their refs) by multihash; returns (blocks, bytes) removed."""

        def txn_fn(txn: Any) -> tuple[int, int]:
            count = 0
            nbytes = 0
            for mh in mhs:
                val = txn.get(mh, db=self._blocks)
                if val is None:
                    continue
                nbytes += len(val)
                txn.delete(mh, db=self._blocks)
                txn.delete(mh, db=self._refs)
                count += 1
            if count:
                self._bump(txn, -count, -nbytes)
            return count, nbytes

        return self._write(txn_fn)

    def delete(self, cid: Cid) -> bool:
        return self.delete_many([cid.multihash])[0] == 1

    # ------------------------------------------------------------ reads (copying)

    def get(self, cid: Cid, *, verify: bool = True) -> bytes:
        with self.reader() as r:
            return bytes(r.read(cid, verify=verify))

    def has(self, cid: Cid) -> bool:
        with self.reader() as r:
            return r.has(cid)

    def stat(self) -> RepoStat:
        with self._read_txn(buffers=False) as txn:
            b = txn.get(b"blocks", db=self._meta)
            n = txn.get(b"bytes", db=self._meta)
            pins = txn.stat(self.pins_db)["entries"]
        data_file = self.path / "data.mdb"
        return RepoStat(
            blocks=_U64.unpack(b)[0] if b else 0,
            bytes=_U64.unpack(n)[0] if n else 0,
            pins=pins,
            map_size=self.env.info()["map_size"],
            file_size=data_file.stat().st_size if data_file.exists() else 0,
            path=str(self.path),
        )

    def iter_multihashes(self, batch: int = 4096) -> Iterator[list[bytes]]:
        """Every stored multihash, in key order, a batch at a time (short read txns)."""
        after: bytes | None = None
        while True:
            out: list[bytes] = []
            with self._read_txn(buffers=False) as txn:
                cur = txn.cursor(db=self._blocks)
                ok = cur.set_range(after) if after is not None else cur.first()
                if ok and after is not None and cur.key() == after:
                    ok = cur.next()
                while ok and len(out) < batch:
                    out.append(cur.key())
                    ok = cur.next()
            if not out:
                return
            yield out
            after = out[-1]

    def verify_all(self, progress: Callable[[int], None] | None = None) -> list[Cid]:
        """Rehash every block; return the CIDs of those that do not match their key."""
        bad: list[Cid] = []
        for keys in self.iter_multihashes(256):
            with self.reader() as r:
                for mh in keys:
                    val = r.txn.get(mh, db=self._blocks)
                    if val is None:
                        continue
                    ok = len(mh) == 34 and hashlib.sha256(val).digest() == mh[2:]
                    if not ok:
                        bad.append(key_cid(mh, r.txn.get(mh, db=self._refs) is not None))
                    if progress is not None:
                        progress(len(val))
            self.release_mapped_pages()
        return bad


class Reader:
    """Zero-copy access inside one read transaction (see `BlockStore.reader`)."""

    __slots__ = ("store", "txn")

    def __init__(self, store: BlockStore, txn: Any) -> None:
        self.store = store
        self.txn = txn

    def has(self, cid: Cid) -> bool:
        if cid.hash_code != SHA2_256:
            return cid.is_identity
        return self.txn.get(cid.multihash, db=self.store._blocks) is not None

    def read(self, cid: Cid, *, verify: bool = True, context: str = "") -> memoryview:
        """The block's bytes as a memoryview into the map; hash-checked by default.

        An identity CID's bytes are its digest (no stored block); a CID under a hash
        this node cannot verify raises `UnverifiableHash` (nothing is stored under one)."""
        if cid.hash_code != SHA2_256:
            if cid.is_identity:
                return memoryview(cid.digest)
            cid.verify(b"")  # raises UnverifiableHash naming the multihash
        val = self.txn.get(cid.multihash, db=self.store._blocks)
        if val is None:
            raise BlockNotFound(cid, context)
        if verify and hashlib.sha256(val).digest() != cid.digest:
            raise CorruptBlock(cid, context)
        mv: memoryview = val
        return mv

    def stored(self, mh: bytes) -> memoryview | None:
        """The stored block under sha2-256 multihash `mh`, unverified (None: absent):
        for the bulk provider, which keys its walk by multihash (no `Cid` per block)."""
        val: memoryview | None = self.txn.get(mh, db=self.store._blocks)
        return val

    def size(self, cid: Cid) -> int | None:
        if cid.is_identity:
            return len(cid.digest)
        val = self.txn.get(cid.multihash, db=self.store._blocks)
        return None if val is None else len(val)

    def links(self, mh: bytes) -> list[bytes] | None:
        """Link CIDs of a dag-pb block from the reference index (None: not dag-pb)."""
        val = self.txn.get(mh, db=self.store._refs)
        return None if val is None else decode_links(val)


def open_home_store(home: Path, conf: dict[str, dict[str, Any]] | None = None,
                    **kw: Any) -> BlockStore:
    """The node's block store at ``<home>/blocks``; the node must exist (`colony init`)."""
    if not (home / "identity.key").exists():
        raise ConfigError(
            f"no Colony node at {home}; run `colony init` first (or set COLONY_HOME / --home)"
        )
    mib = 256
    if conf is not None:
        mib = int(conf["store"]["initial_map_size_mib"])
    return BlockStore(home / "blocks", initial_map_size_mib=mib, **kw)

