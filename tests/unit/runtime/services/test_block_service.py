"""services/blocks.BlockService: the one DAG fetch, on virtual time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from overlay.core.cid import RAW, Cid
from overlay.core.crypto import KeyPair
from overlay.core.errors import ColonyError
from overlay.exchange.engine import BlockReceived, BlockUnavailable, CancelFetch, Fetch
from overlay.runtime.services import blocks as blocks_mod
from overlay.runtime.services.blocks import BlockService
from store.blockstore import BlockStore

ME = KeyPair(b"\x01" * 32).peer_id
PEER = KeyPair(b"\x02" * 32).peer_id
DATA = b"colony" * 100
CID = Cid.from_multihash(b"\x12\x20" + hashlib.sha256(DATA).digest(), RAW, 1)


class Exchange:
    """The cores as the block service sees them: inputs run at once, recorded."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []

    def handle_now(self, inp: Any) -> list[Any]:
        self.inputs.append(inp)
        return []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BlockStore]:
    with BlockStore(tmp_path / "blocks", initial_map_size_mib=16) as s:
        yield s


def _service(store: BlockStore, cores: Exchange) -> BlockService:
    return BlockService(store, cores, None, None, ME)  # type: ignore[arg-type]


def _run(main: Any) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_fetch_dag_asks_the_providers_and_returns_once_committed(store: BlockStore) -> None:
    cores = Exchange()
    svc = _service(store, cores)
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(svc.fetch_dag, CID, [PEER], lambda got, left: seen.append((got, left)))
            await trio.sleep(1.0)
            assert cores.inputs == [Fetch((CID.to_bytes(),), (PEER,))]
            svc.on_event(BlockReceived(CID.to_bytes(), DATA, PEER))
        assert store.has(CID) and svc.sessions == {}
        assert seen[-1] == (1, 0)

    _run(main)


def test_a_stalled_fetch_is_cancelled_and_fails(store: BlockStore) -> None:
    cores = Exchange()
    svc = _service(store, cores)

    async def main() -> None:
        t0 = trio.current_time()
        with pytest.raises(ColonyError, match="stalled: no block for 75 s"):
            await svc.fetch_dag(CID, [PEER])
        assert trio.current_time() - t0 == pytest.approx(blocks_mod.STALL_TIMEOUT_S, abs=0.1)
        assert cores.inputs[-1] == CancelFetch((CID.to_bytes(),)) and svc.sessions == {}

    _run(main)


def test_an_unavailable_block_fails_the_fetch(store: BlockStore) -> None:
    svc = _service(store, Exchange())

    async def refuse() -> None:
        await trio.sleep(1.0)
        svc.on_event(BlockUnavailable(CID.to_bytes(), "no provider"))

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(refuse)
            with pytest.raises(ColonyError, match="unavailable: no provider"):
                await svc.fetch_dag(CID, [PEER])

    _run(main)


def test_a_stored_dag_is_walked_root_first(store: BlockStore) -> None:
    store.put_many([(CID, DATA, None)])
    assert _service(store, Exchange()).dag_multihashes(CID) == [CID.multihash]


@pytest.mark.parametrize("version", [0, 1])
def test_after_a_fetch_only_the_root_and_inner_blocks_are_announced(
        store: BlockStore, version: int) -> None:
    """`inner_only` (what a fetcher provides, issue #16): the root and every block with
    links, none of the leaves (raw in CIDv1, dag-pb without links in CIDv0); the
    publisher's full walk is unchanged."""
    from store.importer import Importer, ImportOptions

    opts = ImportOptions(cid_version=version, chunk_size=1024, max_links=4)
    imp = Importer(store, opts)
    data = b"".join(hashlib.sha256(bytes([i])).digest() * 32 for i in range(20))
    root = imp.add_bytes(data).cid  # 20 distinct leaves of 1 KiB, 4 links a node
    imp.flush()
    svc = _service(store, Exchange())
    every = svc.dag_multihashes(root)
    inner = svc.dag_multihashes(root, inner_only=True)
    with store.reader() as r:
        linked = [mh for mh in every if r.links(mh)]
    assert inner[0] == every[0] == root.multihash
    assert inner == linked and len(every) - len(inner) == 20
    assert len(set(every)) == len(every) and set(inner) < set(every)


def test_a_fetch_whose_caller_leaves_withdraws_its_wants(store: BlockStore) -> None:
    """Its API client went away (the route's generator is closed, so the wait is
    cancelled): the wants still out are withdrawn, and a block arriving later is not
    stored for nobody. Before: the fetch ran on in the daemon (docs/store.md)."""
    cores = Exchange()
    svc = _service(store, cores)

    async def main() -> None:
        with trio.move_on_after(2.0):
            await svc.fetch_dag(CID, [PEER])
        assert cores.inputs == [Fetch((CID.to_bytes(),), (PEER,)),
                                CancelFetch((CID.to_bytes(),))]
        assert svc.sessions == {}
        svc.on_event(BlockReceived(CID.to_bytes(), DATA, PEER))  # late: nobody wants it
        svc.writer.flush()
        assert not store.has(CID)

    _run(main)


def test_a_leaving_caller_keeps_the_wants_another_fetch_shares(store: BlockStore) -> None:
    cores = Exchange()
    svc = _service(store, cores)

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(svc.fetch_dag, CID, [PEER])
            with trio.move_on_after(1.0):
                await svc.fetch_dag(CID, [PEER])
            # The other fetch still wants the block: no CancelFetch names it.
            assert not any(isinstance(i, CancelFetch) and i.cids for i in cores.inputs)
            svc.on_event(BlockReceived(CID.to_bytes(), DATA, PEER))
        assert store.has(CID)

    _run(main)
