"""Durable custody records: what this node holds as a custodian survives `kill -9`.

The capsule core keeps custody records in memory (docs/capsules.md, "Known limits":
losing every holder of a committed version lets a new custodian set reuse fencing
tokens). The core reports every change as `CustodyRecordChanged(capsule_id, record)`
(record None = delete), *before* the effects that act on the change; the daemon hands
it here and `apply` commits it in its own LMDB write transaction with fsync before
returning. The driver carries effects out in order, so by the time a `ReplicateAck`,
`SubmitAck` or lease offer for that version leaves the node, the version is on disk:
nothing this node acknowledged is lost by a crash. At start, `load` returns every
record for `CapsuleCore.restore(records, now)`.

Layout: an LMDB environment of its own at ``<home>/custody`` (one named database,
``records``: capsule id bytes → record bytes as the core encoded them). It is separate
from the block store so a block-store `gc` or repair never touches custody, and its
small write transactions do not queue behind large block imports.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import lmdb

from overlay.core.errors import ColonyError

CUSTODY_DIR = "custody"
INITIAL_MAP_BYTES = 64 << 20
MAX_MAP_BYTES = 1 << 40
#: Longest key accepted (LMDB's default key limit is 511 bytes; capsule ids are ~60).
MAX_KEY_BYTES = 511


class CustodyStoreError(ColonyError):
    pass


#: Beside the identity key: the id of the custody store this identity used.
IDENTITY_MARK = "identity.custody"
STORE_ID = "store.id"
FORGOT = "forgot_before"


def amnesia_since(home: Path, now: float) -> float | None:
    """When this node lost the custody store its identity used, or None.

    The identity key and the custody store can outlive each other (a data disk lost or
    wiped, `[store]` on another volume, a restored backup of the key). A custodian that
    forgot its promises must not vote as itself again (overlay/capsule/amnesia.py). So
    the store gets a random id at creation, recorded beside the identity key; a store
    whose id differs from the recorded one, or a new store while one was recorded, means
    the old one is gone. The verdict is kept in the store (`forgot_before`), so later
    restarts still know. Call before `CustodyStore.open` creates a fresh store.
    """
    d = home / CUSTODY_DIR
    forgot = d / FORGOT
    if forgot.exists():
        try:
            return float(forgot.read_text())
        except ValueError:
            raise CustodyStoreError(f"{forgot} is corrupt; fix or delete it") from None
    mark = home / IDENTITY_MARK
    sid_file = d / STORE_ID
    recorded = mark.read_text().strip() if mark.exists() else None
    if sid_file.exists():
        sid = sid_file.read_text().strip()
    else:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        sid = secrets.token_hex(16)
        _write_synced(sid_file, sid)
    if recorded is None:
        _write_synced(mark, sid)  # first use of this identity (or an older home)
        return None
    if recorded == sid:
        return None
    _write_synced(forgot, repr(now))
    _write_synced(mark, sid)
    return now


def _write_synced(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CustodyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        size = INITIAL_MAP_BYTES
        data = path / "data.mdb"
        if data.exists():
            size = max(size, data.stat().st_size)
        try:
            # sync=True (the default, spelled out): each commit is fsynced before
            # `apply` returns — the whole point of this store.
            self.env = lmdb.open(str(path), map_size=size, max_dbs=2, sync=True, lock=True)
        except lmdb.Error as e:
            raise CustodyStoreError(f"cannot open custody store {path}: {e}") from None
        self._db = self.env.open_db(b"records")
        self.writes = 0

    @classmethod
    def open(cls, home: Path) -> CustodyStore:
        return cls(home / CUSTODY_DIR)

    def close(self) -> None:
        self.env.close()

    @staticmethod
    def _key(capsule_id: bytes | str) -> bytes:
        key = capsule_id.encode() if isinstance(capsule_id, str) else bytes(capsule_id)
        if not key or len(key) > MAX_KEY_BYTES:
            raise CustodyStoreError(f"custody record key of {len(key)} bytes")
        return key

    def apply(self, capsule_id: bytes | str, record: bytes | None) -> None:
        """Store (or, for None, delete) one record; durable when this returns."""
        key = self._key(capsule_id)
        for _ in range(32):
            try:
                with self.env.begin(write=True, db=self._db) as txn:
                    if record is None:
                        txn.delete(key)
                    else:
                        txn.put(key, bytes(record))
                self.writes += 1
                return
            except lmdb.MapFullError:
                cur = self.env.info()["map_size"]
                if cur * 2 > MAX_MAP_BYTES:
                    raise CustodyStoreError(f"custody store {self.path} is full") from None
                self.env.set_mapsize(cur * 2)
        raise CustodyStoreError(f"custody store {self.path}: could not grow the map")

    def load(self) -> Iterator[bytes]:
        """Every stored record (in key order)."""
        with self.env.begin(db=self._db) as txn:
            items = [bytes(v) for _, v in txn.cursor()]
        yield from items

    def __len__(self) -> int:
        with self.env.begin(db=self._db) as txn:
            n: int = txn.stat(self._db)["entries"]
        return n
