"""Bulk DAG streams (`/colony/dag/1.0.0`, services/dag_stream.py) between two real
transports on 127.0.0.1 with real LMDB stores: a DAG arrives whole and verified from
one provider and split over two; a provider that sends a corrupted block, a block
outside the requested DAG, or stops half-way costs only that stream — nothing
unverified is stored, the failure is counted, and what did arrive stays."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from overlay.core.cid import Cid
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.core.multiformats import encode_varint
from overlay.runtime.net.transport import Transport
from overlay.runtime.services.dag_stream import PROTO_DAG, DagStreams
from overlay.runtime.services.fetch import BlockWriter, FetchProgress
from store.blockstore import BlockStore
from store.importer import Importer, ImportOptions

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
Serve = Callable[[PeerId, trio.abc.Stream], Awaitable[None]]


def _dag(store: BlockStore, seed: int, size: int = 3 * 1024 * 1024) -> Cid:
    data = random.Random(seed).randbytes(size)  # 12 leaves of 256 KiB + a root
    return Importer(store, ImportOptions(cid_version=1)).add_bytes(data).cid


async def _pair(tmp: Path, serve: Serve | None,
                body: Callable[[DagStreams, list[PeerId], BlockStore], Awaitable[None]],
                providers: int = 1) -> None:
    """`providers` transports serving their store (or `serve`), one fetching."""
    stores = [BlockStore(tmp / f"p{i}") for i in range(providers)]
    mine = BlockStore(tmp / "fetcher")
    try:
        async with Transport.open(KeyPair.generate(), LOCAL) as ft:
            peers: list[PeerId] = []
            async with trio.open_nursery() as n:
                ready = trio.Event()

                async def provider(i: int) -> None:
                    async with Transport.open(KeyPair.generate(), LOCAL) as pt:
                        ds = DagStreams(pt, stores[i], BlockWriter(stores[i]))
                        if serve is None:
                            ds.register()
                        else:
                            pt.set_stream_handler(PROTO_DAG, serve)
                        ft.add_addrs(pt.peer_id, pt.addrs)
                        peers.append(pt.peer_id)
                        if len(peers) == providers:
                            ready.set()
                        await trio.sleep_forever()

                for i in range(providers):
                    n.start_soon(provider, i)
                await ready.wait()
                fetcher = DagStreams(ft, mine, BlockWriter(mine))
                await body(fetcher, peers, mine)
                n.cancel_scope.cancel()
    finally:
        for s in [*stores, mine]:
            s.close()
    return None


def test_a_dag_arrives_whole_from_one_and_from_two_providers(tmp_path: Path) -> None:
    for providers in (1, 2):
        tmp = tmp_path / f"n{providers}"
        tmp.mkdir()
        with BlockStore(tmp / "p0") as s0:
            root = _dag(s0, 1)
        if providers == 2:
            with BlockStore(tmp / "p1") as s1:
                assert _dag(s1, 1) == root

        async def body(f: DagStreams, peers: list[PeerId], mine: BlockStore,
                       root: Cid = root, providers: int = providers) -> None:
            progress = FetchProgress(str(root))
            got = await f.fetch(root, peers, progress)
            f.writer.flush()
            assert got == 13 and progress.blocks_fetched == 13
            assert mine.has(root) and f.stats.streams_failed == 0
            assert len(progress.by_peer) == providers  # split over both
            from store.exporter import Exporter
            assert Exporter(mine).read_all(root) == random.Random(1).randbytes(3 * 1024 * 1024)

        trio.run(_pair, tmp, None, body, providers)


def _evil(root: Cid, kind: str, good: BlockStore) -> Serve:
    async def serve(peer: PeerId, s: trio.abc.Stream) -> None:
        await s.receive_some(4096)
        with good.reader() as r:
            block = bytes(r.read(root))
        cb = root.to_bytes()
        if kind == "corrupt":
            bad = bytearray(block)
            bad[-1] ^= 1
            await s.send_all(encode_varint(len(cb) + len(bad)) + cb + bytes(bad))
        elif kind == "foreign":
            other = Cid.of(0x55, b"not in the DAG")
            ob = other.to_bytes()
            await s.send_all(encode_varint(len(ob) + 14) + ob + b"not in the DAG")
        else:  # "truncated": the root, then silence and close
            await s.send_all(encode_varint(len(cb) + len(block)) + cb + block)
        await s.aclose()

    return serve


def test_a_bad_provider_costs_one_stream_and_stores_nothing_unverified(tmp_path: Path) -> None:
    for kind in ("corrupt", "foreign", "truncated"):
        tmp = tmp_path / kind
        tmp.mkdir()
        good = BlockStore(tmp / "good")
        root = _dag(good, 2)

        async def body(f: DagStreams, peers: list[PeerId], mine: BlockStore,
                       root: Cid = root, kind: str = kind) -> None:
            got = await f.fetch(root, peers)
            f.writer.flush()
            assert f.stats.streams_failed == 1
            if kind == "truncated":
                assert got == 1 and mine.has(root)  # what arrived verified stays
            else:
                assert got == 0 and not mine.has(root)
                counter = "bad_blocks" if kind == "corrupt" else "unexpected_blocks"
                assert getattr(f.stats, counter) == 1

        try:
            trio.run(_pair, tmp, _evil(root, kind, good), body)
        finally:
            good.close()


def test_a_silent_provider_stream_closes_its_connection(tmp_path: Path, monkeypatch: Any) -> None:
    """A provider that sends the root and then nothing, keeping the stream open: after
    STALL_S the fetcher gives the stream up, keeps the root, and closes the connection
    (a path that carries nothing is presumed broken; the next want dials afresh)."""
    import overlay.runtime.services.dag_stream as ds_mod

    monkeypatch.setattr(ds_mod, "STALL_S", 0.5)
    good = BlockStore(tmp_path / "good")
    root = _dag(good, 3)

    async def serve(peer: PeerId, s: trio.abc.Stream) -> None:
        await s.receive_some(4096)
        with good.reader() as r:
            block = bytes(r.read(root))
        cb = root.to_bytes()
        await s.send_all(encode_varint(len(cb) + len(block)) + cb + block)
        await trio.sleep_forever()

    async def body(f: DagStreams, peers: list[PeerId], mine: BlockStore) -> None:
        got = await f.fetch(root, peers)
        f.writer.flush()
        assert got == 1 and mine.has(root)
        assert f.stats.streams_failed == 1 and f.stats.streams_stalled == 1
        with trio.fail_after(5):
            while f.transport.is_connected(peers[0]):
                await trio.sleep(0.05)

    try:
        trio.run(_pair, tmp_path, serve, body)
    finally:
        good.close()


def test_with_the_commit_thread_the_stream_waits_for_it_and_drain_acknowledges(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """As in the daemon: the commit task runs, the buffer bound is small, so the stream
    waits for the thread (nothing is committed on the event loop) and `drain` returns
    when every block is in the store."""
    import overlay.runtime.services.dag_stream as ds_mod
    import overlay.runtime.services.fetch as fetch_mod

    monkeypatch.setattr(fetch_mod, "MAX_BUFFERED_BYTES", 1024 * 1024)
    # Verified (and handed to the writer) a block or two at a time, so the 3 MiB DAG
    # meets the 1 MiB bound several times.
    monkeypatch.setattr(ds_mod, "VERIFY_BYTES", 256 * 1024)
    with BlockStore(tmp_path / "p0") as s0:
        root = _dag(s0, 4)

    async def body(f: DagStreams, peers: list[PeerId], mine: BlockStore) -> None:
        async with trio.open_nursery() as n:
            await n.start(f.writer.run)
            got = await f.fetch(root, peers)
            assert await f.writer.drain()
            n.cancel_scope.cancel()
        assert got == 13 and f.stats.streams_failed == 0
        assert f.writer.commits == f.writer.background_commits >= 3
        from store.exporter import Exporter
        assert Exporter(mine).read_all(root) == random.Random(4).randbytes(3 * 1024 * 1024)

    trio.run(_pair, tmp_path, None, body)


def test_a_provider_that_arrives_late_takes_a_share_of_a_narrow_dag(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Two providers to start with, a third that appears once the fetch runs (as a DHT
    answer that came after the lookup's walk): it steals the second half of a range's
    unstarted roots, and the range's stream stops at the first stolen root. The DAG's
    root has only 2 children (max_links 16, 24 leaves), so the fetcher splits the
    level below it. Whole, verified, every provider delivered, nothing failed."""
    import overlay.runtime.services.dag_stream as ds_mod

    # Verified (and so checked against the range) a block or two at a time, so a
    # stream is cut before its provider has sent all of its range.
    monkeypatch.setattr(ds_mod, "VERIFY_BYTES", 64 * 1024)
    data = random.Random(5).randbytes(24 * 64 * 1024)
    opts = ImportOptions(cid_version=1, chunk_size=64 * 1024, max_links=16)
    roots = []
    for i in range(3):
        with BlockStore(tmp_path / f"p{i}") as s:
            roots.append(Importer(s, opts).add_bytes(data).cid)
    root = roots[0]
    assert roots == [root] * 3

    async def body(f: DagStreams, peers: list[PeerId], mine: BlockStore) -> None:
        progress = FetchProgress(str(root))
        send, more = trio.open_memory_channel[PeerId](4)
        await send.send(peers[2])
        await send.send(peers[0])  # already fetching: ignored
        async with send:
            got = await f.fetch(root, peers[:2], progress, more)
        f.writer.flush()
        assert got == progress.blocks_fetched == 24 + 2 + 1  # leaves, inner, root
        assert f.stats.streams_failed == 0 and f.stats.steals >= 1
        assert len(progress.by_peer) == 3, progress.by_peer
        from store.exporter import Exporter
        assert Exporter(mine).read_all(root) == data

    trio.run(_pair, tmp_path, None, body, 3)
