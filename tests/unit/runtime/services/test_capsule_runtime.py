"""The capsule runtime's own logic, without a network: the durable custody store (a
real LMDB file), the reachability filter in front of the capsule core (a real core,
virtual time, connectivity as inputs), ad → placement mapping, the spec rewrite for
workflow children, and the ad refresher of a `CapsuleService` built from small real
objects behind the narrow interfaces (a driver over a real gossip core, a real
block store and an unopened transport)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

from gossip.resources import ResourceAd
from gossip.swim import Swim
from overlay.capsule.core import CapsuleCore
from overlay.capsule.events import RunRequested
from overlay.capsule.members import Member, MembersChanged
from overlay.capsule.part import (
    Activate,
    CapsulePart,
    RefreshMembers,
    executor_config,
    node_ad,
    parse_labels,
)
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.crypto import KeyPair
from overlay.core.effects import Connected, Disconnected, PeerUnreachable
from overlay.core.errors import ColonyError
from overlay.core.ids import PeerId
from overlay.runtime.driver import Driver
from overlay.runtime.net.transport import Transport
from overlay.runtime.services.blocks import BlockService
from overlay.runtime.services.capsule_runs import with_inputs
from overlay.runtime.services.capsules import (
    AD_REFRESH_S,
    Authority,
    CapsuleService,
    CapsuleSetup,
    _ad_moved,
)
from overlay.runtime.services.host_ad import local_ad
from overlay.runtime.services.membership import SwimMembership
from store.blockstore import BlockStore
from store.custody_store import CustodyStore

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_custody_store_survives_reopen_and_deletes(tmp_path: Path) -> None:
    store = CustodyStore.open(tmp_path)
    store.apply(b"bafkrei-a", b"record-a-v1")
    store.apply("bafkrei-b", b"record-b")
    store.apply(b"bafkrei-a", b"record-a-v2")  # a newer version replaces the old
    store.close()
    store = CustodyStore.open(tmp_path)
    assert sorted(store.load()) == [b"record-a-v2", b"record-b"]
    store.apply(b"bafkrei-b", None)
    assert list(store.load()) == [b"record-a-v2"] and len(store) == 1
    store.close()


def test_custody_store_grows_its_map(tmp_path: Path) -> None:
    store = CustodyStore.open(tmp_path)
    big = b"x" * (1 << 20)
    for i in range(80):  # 80 MiB > the 64 MiB initial map
        store.apply(f"id{i}", big)
    assert len(store) == 80
    store.close()


def _peers(n: int) -> list[KeyPair]:
    return [KeyPair.generate() for _ in range(n)]


def _part(me: KeyPair, peers: list[PeerId]) -> CapsulePart:
    core = CapsuleCore(me.peer_id, me, rng=random.Random(1))
    view = MembersChanged(tuple(Member(p) for p in [me.peer_id, *peers]))
    return CapsulePart(core, lambda: view, hide_s=10.0)


def test_inactive_part_ignores_views_and_peers_until_activated() -> None:
    me, a, b = _peers(3)
    part = _part(me, [a.peer_id, b.peer_id])
    part.handle(MembersChanged((Member(me.peer_id),)), 0.0)
    assert len(part.core.view) == 1 and part.dropped_inactive == 1
    part.handle(Activate(), 1.0)
    assert len(part.core.view) == 3


def test_unreachable_peer_hidden_until_connected_or_expired() -> None:
    me, a, b = _peers(3)
    part = _part(me, [a.peer_id, b.peer_id])
    part.handle(Connected(a.peer_id), 0.0)  # tracked while inactive too
    part.handle(Activate(), 0.0)
    # A report about a peer we are connected to is stale: dropped.
    part.handle(PeerUnreachable(a.peer_id), 1.0)
    assert part.dropped_unreachable == 1 and part.core.view.is_live(a.peer_id)
    # A real one hides the peer, and refreshes keep it out while it stays unconnected.
    part.handle(PeerUnreachable(b.peer_id), 1.0)
    assert not part.core.view.is_live(b.peer_id)
    part.handle(RefreshMembers(), 3.0)
    assert not part.core.view.is_live(b.peer_id)
    # Connected again: back at the next refresh.
    part.handle(Connected(b.peer_id), 4.0)
    part.handle(RefreshMembers(), 5.0)
    assert part.core.view.is_live(b.peer_id)
    # Unconnected but the hide expired (gossip still lists it alive): back too.
    part.handle(Disconnected(b.peer_id), 5.5)
    part.handle(PeerUnreachable(b.peer_id), 6.0)
    assert not part.core.view.is_live(b.peer_id)
    part.handle(RefreshMembers(), 17.0)
    assert part.core.view.is_live(b.peer_id)


def test_node_ad_maps_gossiped_ad_for_placement() -> None:
    ad = ResourceAd.make(cpu_cores=8, cpu_load=1.5, mem_bytes=16 << 30, gpus=1,
                         executors=("subprocess", "slurm"), labels={"site": "lab"},
                         location="eu", tags=("slots=6",))  # fmt: skip
    na = node_ad(ad)
    assert na is not None
    assert (na.cpu, na.mem_mib, na.gpu, na.free_slots) == (8.0, 16 << 10, 1, 6)
    assert na.executors == ("subprocess", "slurm") and na.labels == (("site", "lab"),)
    # No slot tag (or a junk one): the node offers no executor slots.
    assert node_ad(ResourceAd.make(cpu_cores=2)).free_slots == 0  # type: ignore[union-attr]
    assert node_ad(ResourceAd.make(tags=("slots=x",))).free_slots == 0  # type: ignore[union-attr]
    assert node_ad(None) is None
    assert parse_labels(["b=2", "a = 1"]) == (("a", "1"), ("b", "2"))


def test_workflow_child_runs_with_parent_outputs_as_inputs() -> None:
    kp = KeyPair.generate()
    spec = CapsuleSpec.from_dict({"command": ["true"], "inputs": [CID]})
    cap = Capsule.sign(kp, spec, 1.0)
    parent_out = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
    run = with_inputs(RunRequested(cap, 3, 10.0), [parent_out, CID])
    assert run.capsule.id == cap.id and run.token == 3  # the signed capsule is unchanged
    assert run.capsule.spec.inputs == (CID, parent_out)
    env = dict(run.capsule.spec.env)
    assert env["COLONY_DEP_OUTPUTS"] == f"inputs/{parent_out}\ninputs/{CID}"


def test_ad_is_re_gossiped_only_on_a_real_change() -> None:
    # Load in cores, moved by 0.25 per core (1 core of 4) to count.
    base = ResourceAd.make(cpu_cores=4, cpu_load=0.5, mem_free_bytes=1000)
    assert not _ad_moved(base, ResourceAd.make(cpu_cores=4, cpu_load=1.4, mem_free_bytes=1100))
    assert _ad_moved(base, ResourceAd.make(cpu_cores=4, cpu_load=1.5, mem_free_bytes=1000))
    assert _ad_moved(base, ResourceAd.make(cpu_cores=4, cpu_load=0.5, mem_free_bytes=700))


def test_the_local_ad_gives_the_load_in_cores(tmp_path: Path) -> None:
    """Readers take free CPUs as cores - load (digests, placement's idle share): the
    ad must carry the load average in cores, not per core (a busy 64-core node then
    looked 63 cores free)."""
    ad = local_ad(tmp_path)
    one_minute = os.getloadavg()[0]
    assert ad.cpu_cores == os.cpu_count()
    assert abs(ad.cpu_load - one_minute) <= 0.25 * max(1.0, one_minute)
    assert ad.free_cpu == max(0.0, ad.cpu_cores - ad.cpu_load)


class _NoDht:
    """DHT calls for a test with no network: every call fails as a timeout would."""

    async def call(self, make: Callable[[int], Any], timeout_s: float = 60.0) -> Any:
        raise ColonyError("no DHT in this test")


def test_ad_refresh_keeps_the_reachability_the_dialback_service_set(tmp_path: Path) -> None:
    """The refresher re-reads the machine (load, memory); the `reachability` field is
    the reachability service's, published only when its status changes. A refresh
    that dropped it left every member's view of the ad without it (test_edge_nat)."""
    kp = KeyPair.generate()
    old = ResourceAd.make(cpu_cores=1, cpu_load=1e6, reachability="nat/symmetric")
    swim = Swim(kp, rng=random.Random(1), ad=old)
    membership = SwimMembership(swim)
    network = Transport(kp)  # never opened: the refresher sends nothing
    core = CapsuleCore(kp.peer_id, kp, rng=random.Random(2))
    setup = CapsuleSetup(("subprocess",), executor_config({}, ("subprocess",)), Authority(), core)

    async def main() -> None:
        driver = Driver(swim, send=lambda peer, msg: None)
        with BlockStore(tmp_path / "blocks") as store:
            dht = _NoDht()
            blocks = BlockService(store, driver, network, dht, kp.peer_id)
            async with trio.open_nursery() as n:
                svc = CapsuleService(
                    setup, cores=driver, network=network, membership=membership, dht=dht,
                    blocks=blocks, spawn=n.start_soon, started=trio.Event(), home=tmp_path,
                    conf={"store": {"cid_version": 1}})
                n.start_soon(svc._refresh_ad)
                await trio.sleep(AD_REFRESH_S * 1.5)  # one refresh
                n.cancel_scope.cancel()
            svc.custody_store.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    fresh = membership.own_ad()
    assert fresh is not None and fresh.reachability == "nat/symmetric", fresh
    assert fresh.cpu_load != old.cpu_load  # the measured figures did move


def test_a_lost_custody_store_under_a_kept_identity_is_detected_and_remembered(
    tmp_path: Path,
) -> None:
    from store.custody_store import CUSTODY_DIR, amnesia_since

    home = tmp_path / "home"
    home.mkdir()
    assert amnesia_since(home, 100.0) is None  # first use: the store id is recorded
    assert amnesia_since(home, 200.0) is None  # same store: nothing lost
    import shutil

    shutil.rmtree(home / CUSTODY_DIR)  # the data disk is gone, the key is not
    assert amnesia_since(home, 300.0) == 300.0
    assert amnesia_since(home, 400.0) == 300.0  # remembered across restarts
    # A home lost whole (key included) is a new identity: nothing to detect.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert amnesia_since(fresh, 500.0) is None
