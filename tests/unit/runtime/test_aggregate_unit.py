"""services/aggregate.py pieces that need no network: the epoch's initiator and the
values a node puts in."""

from gossip.resources import ResourceAd
from overlay.core.crypto import KeyPair
from overlay.runtime.services.aggregate import VALUES, initiator, values_of


def test_initiator_is_one_member_the_same_from_every_view_order() -> None:
    peers = [KeyPair(bytes([i]) * 32).peer_id for i in range(1, 30)]
    for epoch in range(20):
        first = initiator(epoch, peers)
        assert first in peers
        assert initiator(epoch, list(reversed(peers))) == first
    # It moves with the epoch (no node is the initiator of every epoch).
    assert len({initiator(e, peers) for e in range(200)}) > 10
    assert initiator(5, []) is None


def test_values_come_from_the_own_ad_and_count_the_node() -> None:
    ad = ResourceAd.make(cpu_cores=8, gpus=2, mem_bytes=16 << 30, mem_free_bytes=4 << 30,
                         disk_free_bytes=100 << 30)
    vals = dict(zip(VALUES, values_of(ad), strict=True))
    assert vals == {"members": 1.0, "cpu_cores": 8.0, "gpus": 2.0, "mem_bytes": 16.0 * 2**30,
                    "mem_free_bytes": 4.0 * 2**30, "disk_free_bytes": 100.0 * 2**30}
    assert values_of(None) == (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # before the first ad


def test_exactly_one_cell_of_a_split_colony_holds_each_epochs_key() -> None:
    """Cells: only the cell holding `epoch_key` has an initiator, so a colony of
    cells (a prefix-free cover of the key space) has one per epoch."""
    from gossip.cells import CellMap
    from overlay.runtime.services.aggregate import epoch_key

    m = CellMap()
    a, _ = m.split(m.leaves()[0])
    m.split(a)
    leaves = m.leaves()
    keys = [epoch_key(e) for e in range(200)]
    assert all(sum(c.contains(k) for c in leaves) == 1 for k in keys)
    assert len({next(c for c in leaves if c.contains(k)) for k in keys}) == len(leaves)


class _Alone:
    """A node alone in its view (Membership) with a transport that sends nothing."""

    def list_members(self, *, include_gone: bool = False) -> list[object]:
        return []

    def own_ad(self) -> None:
        return None

    def is_member(self, peer: object) -> bool:
        return False

    def set_handler(self, *a: object, **kw: object) -> None:
        pass

    def post(self, *a: object) -> bool:
        return False


def test_an_epoch_is_started_once_even_while_the_driver_lags() -> None:
    """The epoch loop ran again before the driver had handled its Restart (a loaded
    machine): it used to queue a second Restart of the same epoch, which the core
    refuses as a caller error, and the exception killed the daemon."""
    import trio
    import trio.testing

    from overlay.runtime.services.aggregate import AggregateService

    alone = _Alone()
    me = KeyPair(bytes([7]) * 32).peer_id
    svc = AggregateService(me, alone, alone, {"epoch_s": 1e9, "round_s": 0.2})  # type: ignore[arg-type]

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(svc.run)  # the driver is not running yet: Restarts queue up
            await trio.sleep(1.0)  # five loops inside one epoch
            await n.start(svc.driver.run)
            await trio.sleep(1.0)
            n.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert svc.stats.epochs_started == 1
    assert svc.core.own_epoch == svc.core.epoch >= 1
