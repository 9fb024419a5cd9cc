"""Networks that build themselves: bootstrap joins, the codec in the loop, signed
values, batched providing, hostile peers and crashed peers."""

from __future__ import annotations

import random
import statistics
from typing import Any

from helpers.core_net import CoreNet

from dht import (
    Bootstrap,
    FindNode,
    GetProviders,
    GetValue,
    KadConfig,
    Kademlia,
    LookupDone,
    PeerInfo,
    Provide,
    ProvideDone,
    Providers,
    PutValue,
    StopProviding,
    Stored,
    Value,
)
from dht.records import make_name_record
from dht.wire import DhtRequest, DhtResponse, KadMessage, MessageType
from overlay.core.crypto import KeyPair
from overlay.core.effects import Effect, Received, Send
from overlay.core.ids import PeerId, key_of_bytes
from overlay.core.multiformats import multihash_sha256

SEED = 777


class OnTheWire:
    """Wraps a core so every message it receives went through to_wire/from_wire."""

    def __init__(self, core: Kademlia) -> None:
        self.core = core

    def handle(self, inp: Any, now: float) -> list[Effect]:
        if isinstance(inp, Received) and isinstance(inp.msg, DhtRequest | DhtResponse):
            msg = KadMessage.from_wire(inp.msg.msg.to_wire())
            inp = Received(inp.peer, type(inp.msg)(inp.msg.rid, msg))
        return self.core.handle(inp, now)


class SelfPromoter:
    """A hostile peer: claims to be the closest peer to every key, stores nothing."""

    def __init__(self, me: PeerId, victims: list[PeerId]) -> None:
        self.me = me
        self.victims = victims

    def handle(self, inp: Any, now: float) -> list[Effect]:
        if isinstance(inp, Bootstrap):  # get into many tables: contact many peers
            return [Send(v, DhtRequest(0, KadMessage(MessageType.PING))) for v in self.victims]
        if isinstance(inp, Received) and isinstance(inp.msg, DhtRequest):
            m = inp.msg.msg
            if m.type == MessageType.ADD_PROVIDER:
                return []
            me = (PeerInfo(self.me),)
            reply = KadMessage(m.type, m.key, closer_peers=me * 30, provider_peers=())
            return [Send(inp.peer, DhtResponse(inp.msg.rid, reply))]
        return []


class Net:
    def __init__(self, n: int, seed: int, cfg: KadConfig, hostile: int = 0,
                 wire: bool = False) -> None:
        rng = self.rng = random.Random(seed)
        self.ids = [PeerId.from_ed25519(rng.randbytes(32)) for _ in range(n)]
        self.keys = {p: KeyPair.from_rng_seed(rng.randbytes(32)) for p in self.ids[:5]}
        self.router = CoreNet(delay_s=0.02, rng=random.Random(seed))
        self.cores: dict[PeerId, Kademlia] = {}
        self.hostile = self.ids[-hostile:] if hostile else []
        for i, p in enumerate(self.ids):
            if p in self.hostile:
                self.router.add(p, SelfPromoter(p, rng.sample(self.ids[:-hostile], 40)))
            else:
                self.cores[p] = Kademlia(p, cfg, rng=random.Random(seed * 31 + i))
                self.router.add(p, OnTheWire(self.cores[p]) if wire else self.cores[p])
        self.results: dict[int, Any] = {}
        self.router.on_emit = self._on_emit
        self._rid = 0

    def _on_emit(self, t: float, peer: PeerId, ev: Any) -> None:
        if isinstance(ev, LookupDone | ProvideDone):
            self.results[ev.request_id] = ev

    def rid(self) -> int:
        self._rid += 1
        return self._rid

    def join_all(self, seeds: int = 3) -> None:
        boot = tuple(PeerInfo(p) for p in self.ids[:seeds])
        for p in self.ids:
            self.router.inject(p, Bootstrap(boot, self.rid()))
            self.router.run_for(3.0)
        self.router.run_for(30.0)

    def run(self, src: PeerId, cmd: Any, dt: float = 5.0) -> Any:
        self.router.inject(src, cmd)
        self.router.run_for(dt)
        return self.results[cmd.request_id]

    def honest(self) -> list[PeerId]:
        return [p for p in self.ids if p in self.cores]


def test_bootstrap_join_then_accurate_lookups_through_the_codec() -> None:
    # 100 nodes (was 150 until stop 33: a third fewer messages through the codec, ~60 000
    # of them): every table still spans several buckets (k = 20; the smallest held 44).
    net = Net(100, SEED, KadConfig(), wire=True)
    net.join_all()
    sizes = [len(c.table) for c in net.cores.values()]
    assert min(sizes) >= 20, f"seed {SEED}: a node joined with {min(sizes)} peers"
    hits = []
    for _ in range(40):
        key = net.rng.randbytes(20)
        src = net.rng.choice(net.ids)
        ld = net.run(src, FindNode(net.rid(), key), 3.0)
        t = key_of_bytes(key)
        truth = set(sorted((p for p in net.ids if p != src), key=lambda p: p.key ^ t)[:20])
        hits.append(len(truth & set(ld.result.peers)))
    print(f"\njoin N=100 seed={SEED}: mean hits {statistics.mean(hits):.2f}, min {min(hits)}")
    assert min(hits) >= 19


def test_signed_values_quorum_and_newest_seq_wins() -> None:
    net = Net(100, SEED + 1, KadConfig())  # 120 until stop 33
    net.join_all()
    owner = net.ids[0]
    kp = net.keys[owner]
    key, v1 = make_name_record(kp, b"cid-1", 1, 1e9)
    st = net.run(owner, PutValue(net.rid(), key, v1))
    assert isinstance(st.result, Stored) and st.result.acks >= 15
    reader = net.ids[50]
    got = net.run(reader, GetValue(net.rid(), key, quorum=3))
    assert isinstance(got.result, Value)
    assert got.result.payload == b"cid-1" and got.result.valid_responses >= 3
    _, v2 = make_name_record(kp, b"cid-2", 2, 1e9)
    net.run(owner, PutValue(net.rid(), key, v2))
    got = net.run(net.ids[77], GetValue(net.rid(), key, quorum=5))
    assert got.result.payload == b"cid-2" and got.result.seq == 2
    missing = net.run(reader, GetValue(net.rid(), b"/colony/name/" + b"1" * 10))
    assert missing.error == "not found"


def test_sweep_provides_many_cids_with_few_lookups() -> None:
    net = Net(250, SEED + 2, KadConfig())
    net.join_all()
    provider = net.ids[7]
    mhs = tuple(multihash_sha256(i.to_bytes(4, "big")) for i in range(400))
    done = net.run(provider, Provide(net.rid(), mhs), 30.0)
    assert isinstance(done, ProvideDone)
    print(f"\nsweep: {done.keys} CIDs in {done.regions} regions, {done.lookups} lookups, "
          f"{done.messages} ADD_PROVIDER messages")
    assert done.keys == 400 and done.lookups <= 32
    assert done.messages == 400 * 20
    # the true k closest peers of every CID hold its record (≥ 19 of 20)
    others = [p for p in net.ids if p != provider]
    for mh in mhs:
        t = key_of_bytes(mh)
        closest = sorted(others, key=lambda p: p.key ^ t)[:20]
        held = sum(1 for p in closest if net.cores[p].providers.get(mh, 0.0, 1))
        assert held >= 19, f"seed {SEED + 2}: only {held} of the 20 closest hold {mh.hex()}"
    for mh in net.rng.sample(mhs, 25):
        asker = net.rng.choice(net.ids)
        ld = net.run(asker, GetProviders(net.rid(), mh, count=1), 3.0)
        assert isinstance(ld.result, Providers)
        assert [i.peer for i in ld.result.providers] == [provider]


def test_reprovide_keeps_records_alive_past_their_ttl() -> None:
    cfg = KadConfig(provider_ttl_s=100.0, reprovide_interval_s=40.0, expire_interval_s=10.0,
                    refresh_check_s=1e6)
    net = Net(60, SEED + 3, cfg)
    net.join_all()
    provider = net.ids[3]
    mh = multihash_sha256(b"long-lived")
    net.run(provider, Provide(net.rid(), (mh,)))
    net.router.run_for(300.0)  # three TTLs; the 40 s reprovide keeps refreshing
    ld = net.run(net.ids[40], GetProviders(net.rid(), mh, count=1))
    assert [i.peer for i in ld.result.providers] == [provider]
    # stop providing: after one TTL the records are gone
    net.router.inject(provider, StopProviding((mh,)))
    net.router.run_for(150.0)
    assert all(c.providers.get(mh, net.router.now, 1) == [] for c in net.cores.values())


def test_hostile_self_promoters_do_not_break_lookups() -> None:
    net = Net(100, SEED + 4, KadConfig(rpc_timeout_s=1.0), hostile=10)  # 150/15 until stop 33
    net.join_all()
    hits = []
    for _ in range(30):
        key = net.rng.randbytes(20)
        src = net.rng.choice(net.honest())
        ld = net.run(src, FindNode(net.rid(), key), 3.0)
        t = key_of_bytes(key)
        truth = set(sorted((p for p in net.ids if p != src), key=lambda p: p.key ^ t)[:20])
        hits.append(len(truth & set(ld.result.peers)))
    # Self-promoters answer but refer no one; honest peers' referrals still reach the
    # true neighbourhood.
    print(f"\nhostile 10%: mean hits {statistics.mean(hits):.2f}, min {min(hits)}")
    assert min(hits) >= 19
    assert sum(c.stats.self_referrals for c in net.cores.values()) > 0
    assert sum(c.stats.peer_lists_truncated for c in net.cores.values()) > 0


def test_crashed_peers_time_out_and_leave_tables() -> None:
    cfg = KadConfig(rpc_timeout_s=1.0)
    net = Net(120, SEED + 5, cfg)
    net.join_all()
    dead = net.rng.sample(net.ids[3:], 30)
    for p in dead:
        net.router.kill(p)
    alive = [p for p in net.ids if p not in dead]
    hits = []
    for _ in range(40):
        key = net.rng.randbytes(20)
        src = net.rng.choice(alive)
        ld = net.run(src, FindNode(net.rid(), key), 10.0)
        t = key_of_bytes(key)
        assert not set(ld.result.peers) & set(dead)
        truth = set(sorted((p for p in alive if p != src), key=lambda p: p.key ^ t)[:20])
        hits.append(len(truth & set(ld.result.peers)))
    assert statistics.mean(hits) >= 19
    assert sum(c.stats.rpc_timeouts for c in net.cores.values()) > 0
    evicted = sum(c.table.stats.evicted for p, c in net.cores.items() if p in alive)
    assert evicted > 0
