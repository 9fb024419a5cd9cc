"""The importer's writer thread: order, drain-means-committed, errors reach the caller."""

import hashlib
import random
import threading
from pathlib import Path

import pytest

from overlay.core.cid import RAW, Cid
from store.batch_writer import BatchWriter
from store.blockstore import BlockStore
from store.importer import Importer, ImportOptions, ImportPathError


def raw_block(seed: int, n: int = 1000) -> tuple[Cid, bytes, None]:
    data = random.Random(seed).randbytes(n)
    return Cid(1, RAW, hashlib.sha256(data).digest()), data, None


def test_drain_returns_with_every_batch_committed(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "s") as store:
        w = BatchWriter(store)
        batches = [[raw_block(10 * b + i) for i in range(5)] for b in range(6)]
        for b in batches:
            w.submit(b)
        w.drain()
        assert w.new_blocks == 30
        assert store.stat().blocks == 30
        assert all(store.get(cid) == data for b in batches for cid, data, _ in b)
        # Drained means the thread is gone; a new submit starts another.
        assert not any(t.name == "colony-block-writer" for t in threading.enumerate())
        w.submit([raw_block(999)])
        w.submit([raw_block(999)])  # already there: not new
        w.drain()
        assert w.new_blocks == 31


def test_write_error_is_raised_in_the_caller(tmp_path: Path) -> None:
    BlockStore(tmp_path / "s").close()
    with BlockStore(tmp_path / "s", readonly=True) as store:
        w = BatchWriter(store)
        w.submit([raw_block(1)])
        with pytest.raises(Exception, match=r"(?i)read.?only|permission"):
            w.drain()
        assert w.new_blocks == 0
        w.drain()  # the error was reported once; nothing is left running


def test_importer_error_midway_stops_writer_and_keeps_committed_blocks(tmp_path: Path) -> None:
    class FailingSource:
        """Yields 3 MiB, then the read fails (a disk error, a dropped pipe)."""

        def __init__(self) -> None:
            self.left = 3 << 20
            self.rng = random.Random(5)

        def read(self, n: int) -> bytes:
            if self.left <= 0:
                raise OSError("input/output error")
            n = min(n, self.left)
            self.left -= n
            return self.rng.randbytes(n)

    seen: list[str] = []
    with BlockStore(tmp_path / "s") as store:
        imp = Importer(store, ImportOptions(batch_blocks=4),
                       on_entry=lambda a: seen.append(str(a.cid)))
        with pytest.raises(OSError):
            imp.add_stream(FailingSource())
        assert not any(t.name == "colony-block-writer" for t in threading.enumerate())
        assert store.stat().blocks == 12  # every chunk hashed before the failure
        assert seen == []  # no root was acknowledged
        with pytest.raises(ImportPathError):
            imp.add_path(tmp_path / "missing")
        assert imp.add_bytes(b"after").cid == Importer(None).add_bytes(b"after").cid
        assert len(seen) == 1


def test_depth_must_be_positive(tmp_path: Path) -> None:
    with BlockStore(tmp_path / "s") as store, pytest.raises(ValueError):
        BatchWriter(store, depth=0)
