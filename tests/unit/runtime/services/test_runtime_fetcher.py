"""BlockWriter: batches committed on a worker thread, flush() commits everything."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import trio

from overlay.core.cid import RAW, Cid
from overlay.runtime.services import fetch as fetcher
from overlay.runtime.services.fetch import BlockWriter
from store.blockstore import BlockStore


def block(i: int, size: int = 1024) -> tuple[Cid, bytes]:
    data = i.to_bytes(4, "big") * (size // 4)
    return Cid.from_multihash(b"\x12\x20" + hashlib.sha256(data).digest(), RAW, 1), data


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with BlockStore(tmp_path / "blocks", initial_map_size_mib=16) as s:
        yield s


def test_without_the_commit_task_add_commits_inline_at_the_threshold(store: BlockStore) -> None:
    w = BlockWriter(store)
    blocks = [block(i) for i in range(fetcher.FLUSH_BLOCKS)]
    for cid, data in blocks[:-1]:
        w.add(cid, data, None)
    assert w.commits == 0 and w.has(blocks[0][0]) and not store.has(blocks[0][0])
    w.add(*blocks[-1], None)
    assert w.commits == 1 and all(store.has(c) for c, _ in blocks)


def test_background_commits_then_flush_commits_the_rest(store: BlockStore) -> None:
    blocks = [block(i) for i in range(fetcher.FLUSH_BLOCKS + 5)]

    async def main() -> None:
        w = BlockWriter(store)
        async with trio.open_nursery() as n:
            await n.start(w.run)
            for cid, data in blocks[: fetcher.FLUSH_BLOCKS]:
                w.add(cid, data, None)
            assert w.commits == 0  # handed to the task, not committed inline
            for _ in range(200):  # wait for the thread
                if w.background_commits:
                    break
                await trio.sleep(0.01)
            assert w.background_commits == 1
            assert all(store.has(c) for c, _ in blocks[: fetcher.FLUSH_BLOCKS])
            for cid, data in blocks[fetcher.FLUSH_BLOCKS :]:
                w.add(cid, data, None)
            assert not store.has(blocks[-1][0]) and w.has(blocks[-1][0])
            w.flush()  # acknowledgement point: everything committed on return
            assert all(store.has(c) for c, _ in blocks)
            n.cancel_scope.cancel()

    trio.run(main)


def test_flush_also_commits_the_batch_still_on_the_thread(store: BlockStore) -> None:
    w = BlockWriter(store)
    (c1, d1), (c2, d2) = block(1), block(2)
    w._committing = {c1.multihash: (c1, d1, None)}  # as if mid-commit on the thread
    w.add(c2, d2, None)
    assert w.has(c1) and w.pending_block(c1.multihash) == d1
    w.flush()
    assert store.has(c1) and store.has(c2)
    assert store.stat().blocks == 2
    store.put_many([(c1, d1, None)])  # the thread's late commit: a no-op, counted once
    assert store.stat().blocks == 2


def test_buffer_beyond_the_limit_commits_inline(store: BlockStore, monkeypatch: Any) -> None:
    """Beyond HARD_BUFFERED_FACTOR x the bound `wait_room` keeps to, an adder that
    did not wait commits on its own thread."""
    monkeypatch.setattr(fetcher, "FLUSH_BLOCKS", 2)
    monkeypatch.setattr(fetcher, "MAX_BUFFERED_BYTES", 3 * 1024)
    hard = fetcher.HARD_BUFFERED_FACTOR * 3  # blocks of 1 KiB
    w = BlockWriter(store)
    w._running = True  # a commit task that is busy (never takes the batch)
    for i in range(hard - 1):
        w.add(*block(i), None)
    assert w.commits == 0  # handed to the (busy) task
    w.add(*block(hard - 1), None)
    assert w.commits == 1 and all(store.has(block(i)[0]) for i in range(hard))


def test_a_failed_background_commit_keeps_the_blocks(
    store: BlockStore, monkeypatch: Any
) -> None:
    blocks = [block(i) for i in range(fetcher.FLUSH_BLOCKS)]
    real = store.put_many

    def failing(items: Any) -> int:
        raise OSError("disk gone")

    async def main() -> None:
        w = BlockWriter(store)
        async with trio.open_nursery() as n:
            await n.start(w.run)
            monkeypatch.setattr(store, "put_many", failing)
            for cid, data in blocks:
                w.add(cid, data, None)
            for _ in range(200):
                if not w._running:
                    break
                await trio.sleep(0.01)
            assert not w._running and all(w.has(c) for c, _ in blocks)
            monkeypatch.setattr(store, "put_many", real)
            w.commit_soon()  # no thread any more: commits inline
            assert all(store.has(c) for c, _ in blocks)
            n.cancel_scope.cancel()

    trio.run(main)


def test_wait_room_and_drain_commit_on_the_thread_and_grow_the_map_ahead(
    store: BlockStore, monkeypatch: Any
) -> None:
    """The bulk stream's path: back-pressure waits for the commit thread instead of
    committing on the event loop, a batch near the end of the map grows the map first
    and still commits on the thread, and `drain` returns only when all is committed."""
    monkeypatch.setattr(fetcher, "MAX_BUFFERED_BYTES", 3 * fetcher.FLUSH_BYTES // 16)
    size = 64 * 1024  # 64 blocks = 4 MiB a batch; the 16 MiB map needs to grow
    blocks = [block(i, size) for i in range(6 * fetcher.FLUSH_BLOCKS)]
    reserved: list[int] = []
    real_reserve = store.reserve

    def reserve(nbytes: int) -> None:
        reserved.append(nbytes)
        real_reserve(nbytes)

    monkeypatch.setattr(store, "reserve", reserve)

    async def main() -> None:
        w = BlockWriter(store)
        resizes = store.gate.resizes
        async with trio.open_nursery() as n:
            await n.start(w.run)
            for cid, data in blocks:
                await w.wait_room(len(data))
                assert w._bytes + len(data) < fetcher.MAX_BUFFERED_BYTES
                w.add(cid, data, None)
            assert w.commits == w.background_commits  # nothing committed inline
            assert await w.drain()
            assert not w._pending and not w._committing
            assert all(store.has(c) for c, _ in blocks)
            assert w.commits == w.background_commits >= 6
            assert reserved and store.gate.resizes > resizes  # grown ahead, on the loop
            n.cancel_scope.cancel()

    trio.run(main)


def test_drain_without_the_commit_task_commits_inline(store: BlockStore) -> None:
    w = BlockWriter(store)
    cid, data = block(1)
    w.add(cid, data, None)

    async def main() -> None:
        assert await w.drain()

    trio.run(main)
    assert store.has(cid) and w.commits == 1 and w.background_commits == 0
