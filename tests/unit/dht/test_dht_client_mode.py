"""kad-dht client mode: clients look up but never answer, store, or enter tables.

Unit part: one core, hand-advanced time. A requester not in a server's table gets one
PING ("are you a server?"); it enters the table only if it answers. Network part: 300
static servers plus 20 client cores on the in-memory router (virtual time).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from dht import (
    Bootstrap,
    FindNode,
    GetProviders,
    KadConfig,
    Kademlia,
    LookupDone,
    ModeChanged,
    PeerInfo,
    PeerRoleLearned,
    Provide,
    Providers,
    ReachabilityLearned,
)
from dht.wire import DhtRequest, DhtResponse, KadMessage, MessageType
from overlay.core.effects import Emit, PeerUnreachable, Received, Send, TimerFired
from overlay.core.errors import ConfigError
from overlay.core.ids import PeerId, key_of_bytes
from overlay.core.multiformats import multihash_sha256
from overlay.runtime.process import config
from sim.dht_static import build_static_network, random_peer_ids

SEED = 99
ME, ASKER, OTHER = random_peer_ids(3, random.Random(SEED))
MH = multihash_sha256(b"data")


def sends(effects: Sequence[object]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def ask(c: Kademlia, frm: PeerId, now: float, msg: KadMessage | None = None) -> list[Send]:
    m = msg or KadMessage(MessageType.FIND_NODE, b"some key")
    return sends(c.handle(Received(frm, DhtRequest(7, m)), now))


def verify_ping(out: list[Send], peer: PeerId) -> DhtRequest:
    (ping,) = [s.msg for s in out if isinstance(s.msg, DhtRequest) and s.peer == peer]
    assert ping.msg.type == MessageType.PING
    return ping


def test_requester_enters_the_table_only_after_answering_a_ping() -> None:
    c = Kademlia(ME, KadConfig(), rng=random.Random(1))
    out = ask(c, ASKER, 1.0)
    assert any(isinstance(s.msg, DhtResponse) for s in out)  # served at once
    ping = verify_ping(out, ASKER)
    assert ASKER not in c.table
    assert verify_ping(ask(c, OTHER, 1.5), OTHER)
    # A second request while the PING is in flight sends no second PING.
    assert [s for s in ask(c, ASKER, 2.0) if isinstance(s.msg, DhtRequest)] == []
    c.handle(Received(ASKER, DhtResponse(ping.rid, KadMessage(MessageType.PING))), 2.5)
    assert ASKER in c.table and c.stats.role_checks_sent == 2
    # In the table now: later requests just refresh it, no PING.
    assert [s for s in ask(c, ASKER, 3.0) if isinstance(s.msg, DhtRequest)] == []


def test_a_client_requester_is_served_but_never_added() -> None:
    cfg = KadConfig()
    c = Kademlia(ME, cfg, rng=random.Random(1))
    ping = verify_ping(ask(c, ASKER, 1.0), ASKER)
    c.handle(TimerFired(("rpc", ping.rid)), 1.0 + cfg.rpc_timeout_s)  # no answer
    assert ASKER not in c.table and c.stats.role_checks_failed == 1
    # Remembered: served without another PING until the verdict is role_check_ttl_s old.
    out = ask(c, ASKER, 20.0)
    assert any(isinstance(s.msg, DhtResponse) for s in out)
    assert [s for s in out if isinstance(s.msg, DhtRequest)] == []
    assert ASKER not in c.table
    later = 1.0 + cfg.rpc_timeout_s + cfg.role_check_ttl_s + 1.0
    verify_ping(ask(c, ASKER, later), ASKER)  # checked again: it may have become a server
    # A refused stream (PeerUnreachable) counts as "not a server" too.
    verify_ping(ask(c, OTHER, later), OTHER)
    c.handle(PeerUnreachable(OTHER), later + 0.1)
    assert OTHER not in c.table and c.stats.role_checks_failed == 2


def test_role_learned_out_of_band_spares_the_ping() -> None:
    c = Kademlia(ME, KadConfig(), rng=random.Random(1))
    c.handle(PeerRoleLearned(ASKER, server=True), 0.0)
    out = ask(c, ASKER, 1.0)
    assert [s for s in out if isinstance(s.msg, DhtRequest)] == []
    assert ASKER in c.table
    # Identify later says it stopped serving kad: out of the table, and stays out.
    c.handle(PeerRoleLearned(ASKER, server=False), 2.0)
    assert ASKER not in c.table
    assert [s for s in ask(c, ASKER, 3.0) if isinstance(s.msg, DhtRequest)] == []
    assert ASKER not in c.table


def test_role_memory_is_bounded() -> None:
    c = Kademlia(ME, KadConfig(max_role_checks=10), rng=random.Random(1))
    for p in random_peer_ids(25, random.Random(5)):
        c.handle(PeerRoleLearned(p, server=False), 0.0)
    assert len(c.roles) == 10


def test_client_core_answers_nothing_and_stores_nothing() -> None:
    c = Kademlia(ME, KadConfig(mode="client"), rng=random.Random(1))
    add = KadMessage(MessageType.ADD_PROVIDER, MH, provider_peers=(PeerInfo(ASKER),))
    for msg in (KadMessage(MessageType.PING), KadMessage(MessageType.FIND_NODE, b"k"), add,
                KadMessage(MessageType.GET_PROVIDERS, MH)):
        assert ask(c, ASKER, 1.0, msg) == []
    assert c.stats.requests_refused_client == 4 and c.stats.requests_served == 0
    assert len(c.providers) == 0 and ASKER not in c.table


def test_auto_mode_serves_until_told_it_is_unreachable_and_again_after() -> None:
    c = Kademlia(ME, KadConfig(mode="auto"), rng=random.Random(1))
    assert any(isinstance(s.msg, DhtResponse) for s in ask(c, ASKER, 1.0))
    assert [e for e in c.handle(ReachabilityLearned(True), 2.0)
            if not isinstance(e, Send)] == []  # already serving: no change
    assert Emit(ModeChanged(False)) in c.handle(ReachabilityLearned(False), 3.0)
    assert ask(c, OTHER, 4.0) == [] and c.stats.requests_refused_client == 1
    assert Emit(ModeChanged(True)) in c.handle(ReachabilityLearned(True), 5.0)
    assert any(isinstance(s.msg, DhtResponse) for s in ask(c, OTHER, 6.0))
    assert c.stats.mode_changes == 2
    # Fixed modes ignore the verdict.
    fixed = Kademlia(ME, KadConfig(mode="server"), rng=random.Random(1))
    fixed.handle(ReachabilityLearned(False), 1.0)
    assert fixed.serving and fixed.stats.mode_changes == 0


def test_a_requester_whose_bucket_is_full_is_served_without_a_ping() -> None:
    # Fill the bucket ASKER would go to, so that even a verified server could only wait
    # in the replacement cache: the PING that would verify it is not worth sending.
    c = Kademlia(ME, KadConfig(k=2), rng=random.Random(1))
    cpl = c.table.cpl(ASKER.key)
    same = [p for p in random_peer_ids(400, random.Random(3))
            if c.table.cpl(p.key) == cpl and p != ASKER][:2]
    for p in same:
        c.table.seen(p, 0.0)
    out = ask(c, ASKER, 1.0)
    assert any(isinstance(s.msg, DhtResponse) for s in out)
    assert [s for s in out if isinstance(s.msg, DhtRequest)] == []
    assert c.stats.role_checks_skipped_full == 1 and c.stats.role_checks_sent == 0


def test_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="server"):
        KadConfig(mode="peer")  # type: ignore[arg-type]


def test_clients_look_up_and_provide_but_stay_out_of_every_table() -> None:
    cfg = KadConfig(refresh_check_s=1e9)
    ids, cores, router = build_static_network(300, SEED, cfg, delay_s=0.02)
    clients = random_peer_ids(20, random.Random(SEED + 1))
    ccfg = KadConfig(mode="client", refresh_check_s=1e9)
    for i, p in enumerate(clients):
        cores[p] = Kademlia(p, ccfg, rng=random.Random(SEED + 100 + i))
        router.add(p, cores[p])
    results: dict[int, LookupDone] = {}
    router.on_emit = lambda t, p, ev: (
        results.__setitem__(ev.request_id, ev) if isinstance(ev, LookupDone) else None)
    boot = tuple(PeerInfo(p) for p in ids[:3])
    for p in clients:
        router.inject(p, Bootstrap(boot, 0))
    router.run_for(60.0)  # servers' verifying PINGs to clients time out (10 s)

    client_set = set(clients)
    for p in ids:
        assert not client_set & set(cores[p].table.peers()), f"seed {SEED}: client in {p}"
    for p in clients:
        assert len(cores[p].table) >= 20  # clients keep a table of servers

    rng = random.Random(SEED + 2)
    for i in range(20):
        key = rng.randbytes(34)
        router.inject(clients[i], FindNode(i, key))
        router.run_for(5.0)
        t = key_of_bytes(key)
        truth = set(sorted(ids, key=lambda p: p.key ^ t)[:20])
        got = results[i].result.peers  # type: ignore[union-attr]
        assert not client_set & set(got)
        assert len(truth & set(got)) >= 19, f"seed {SEED}: client lookup {i}"

    # A client provides (ADD_PROVIDER to servers); a server finds it.
    router.inject(clients[0], Provide(100, (MH,)))
    router.run_for(10.0)
    router.inject(ids[50], GetProviders(101, MH, count=1))
    router.run_for(5.0)
    res = results[101].result
    assert isinstance(res, Providers)
    assert [i.peer for i in res.providers] == [clients[0]]
    assert sum(cores[p].stats.requests_refused_client for p in clients) > 0


def test_daemon_config_mode_is_checked(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[dht]\nmode = "client"\n')
    assert config.load(tmp_path, env={})["dht"]["mode"] == "client"
    assert config.load(tmp_path, env={"COLONY_DHT_MODE": "server"})["dht"]["mode"] == "server"
    (tmp_path / "config.toml").write_text('[dht]\nmode = "leech"\n')
    with pytest.raises(ConfigError, match=r'\[dht\] mode must be "server", "client" or "auto"'):
        config.load(tmp_path, env={})
