"""GET_PROVIDERS streams its providers (`ProvidersFound`) and keeps listening, after its
walk ended, for answers past their soft timeout: a provider that answers late (a busy
node) is still reported. Fake time, no I/O."""

from __future__ import annotations

import hashlib
import random

from dht import (
    GetProviders,
    KadConfig,
    Kademlia,
    LookupDone,
    PeerAddressesLearned,
    Providers,
    ProvidersFound,
)
from dht.wire import DhtRequest, DhtResponse, KadMessage, MessageType, PeerInfo
from overlay.core.effects import Effect, Emit, Received, Send, TimerFired
from overlay.core.ids import PeerId

KEY = b"\x12\x20" + hashlib.sha256(b"a dataset").digest()


def pid(i: int) -> PeerId:
    return PeerId.from_ed25519(random.Random(1000 + i).randbytes(32))


ME = pid(0)
N0, N1, N2 = pid(1), pid(2), pid(3)


def sends(effects: list[Effect]) -> dict[PeerId, Send]:
    return {e.peer: e for e in effects if isinstance(e, Send)}


def found(effects: list[Effect]) -> list[ProvidersFound]:
    return [e.event for e in effects
            if isinstance(e, Emit) and isinstance(e.event, ProvidersFound)]


def done(effects: list[Effect]) -> list[LookupDone]:
    return [e.event for e in effects if isinstance(e, Emit) and isinstance(e.event, LookupDone)]


def reply(core: Kademlia, s: Send, providers: list[PeerId], now: float) -> list[Effect]:
    req = s.msg
    assert isinstance(req, DhtRequest)
    msg = KadMessage(MessageType.GET_PROVIDERS, KEY,
                     provider_peers=tuple(PeerInfo(p) for p in providers))
    return core.handle(Received(s.peer, DhtResponse(req.rid, msg)), now)


def rid(s: Send) -> int:
    assert isinstance(s.msg, DhtRequest)
    return s.msg.rid


def colony_of_four() -> tuple[Kademlia, list[Effect], dict[PeerId, Send]]:
    """As in bench/fetch.py: we know the records of N0 and N1 (they announced to us);
    N2 just fetched the data and provides it too, but is busy and answers late."""
    core = Kademlia(ME, KadConfig(rpc_timeout_s=10.0), rng=random.Random(1))
    for p in (N0, N1, N2):
        core.table.seen(p, 0.0)
    core.providers.add(KEY, N0, (), 0.0)
    core.providers.add(KEY, N1, (), 0.0)
    eff = core.handle(GetProviders(7, KEY), 1.0)
    return core, eff, sends(eff)


def test_known_providers_at_once_and_a_late_answer_still_reported() -> None:
    core, eff, asked = colony_of_four()
    # What the core knows is reported at once, before any answer: a fetch can start.
    (first,) = found(eff)
    assert [i.peer for i in first.providers] == [N1, N0] and not first.last  # freshest first
    assert set(asked) == {N0, N1, N2}
    eff = reply(core, asked[N0], [N0, N1], 1.01) + reply(core, asked[N1], [N0, N1], 1.02)
    assert found(eff) == [] and done(eff) == []  # nothing new; N2 still awaited
    # N2 passes its soft timeout (the initial RTO, 2 s): the walk ends without it.
    eff = core.handle(TimerFired(("rpc", rid(asked[N2]))), 3.0)
    (ld,) = done(eff)
    assert isinstance(ld.result, Providers)
    assert {i.peer for i in ld.result.providers} == {N0, N1}
    assert found(eff) == []  # not over: N2's answer may still come
    assert core.running_lookups() == 0 and len(core.lookups.waiting) == 1
    # N2 answers late, before its hard timeout: it is reported, then the search ends.
    eff = reply(core, asked[N2], [N2], 4.5)
    late, last = found(eff)
    assert [i.peer for i in late.providers] == [N2] and not late.last
    assert last == ProvidersFound(7, (), last=True)
    assert core.stats.late_providers == 1 and core.stats.late_answers_after_stall == 1
    assert not core.lookups.waiting and core.pending_rpcs() == 0


def test_a_late_query_that_fails_ends_the_wait_at_its_hard_timeout() -> None:
    core, _, asked = colony_of_four()
    reply(core, asked[N0], [N0], 1.01)
    reply(core, asked[N1], [N1], 1.02)
    eff = core.handle(TimerFired(("rpc", rid(asked[N2]))), 3.0)
    assert len(done(eff)) == 1 and found(eff) == []
    eff = core.handle(TimerFired(("rpc", rid(asked[N2]))), 11.0)  # sent at 1.0, +10 s
    assert found(eff) == [ProvidersFound(7, (), last=True)]
    assert not core.lookups.waiting and core.stats.late_providers == 0


def test_no_wait_when_every_query_answered_or_enough_found() -> None:
    core, _, asked = colony_of_four()
    eff = []
    for p in (N0, N1, N2):
        eff += reply(core, asked[p], [p], 1.1)
    assert len(done(eff)) == 1
    assert [f.last for f in found(eff)] == [False, True]  # N2 new, then the end
    assert not core.lookups.waiting
    # count=2 is met by what we hold: done at once, no query, no wait.
    eff = core.handle(GetProviders(8, KEY, count=2), 2.0)
    assert sends(eff) == {}
    assert [d.request_id for d in done(eff)] == [8]
    assert [(f.request_id, f.last) for f in found(eff)] == [(8, False), (8, True)]


def test_a_refused_command_ends_its_stream_too() -> None:
    core = Kademlia(ME, KadConfig(max_lookups=1), rng=random.Random(1))
    for p in (N0, N1, N2):
        core.table.seen(p, 0.0)
    core.handle(GetProviders(1, KEY), 0.0)
    eff = core.handle(GetProviders(2, KEY), 0.0)
    (ld,) = done(eff)
    assert ld.error == "busy"
    assert found(eff) == [ProvidersFound(2, (), last=True)]


def test_addresses_of_a_provider_known_without_them_are_kept() -> None:
    """Our store holds N0's record without addresses (N0 announced none). An answer
    naming N0 with addresses must not be dropped as "nothing new": the addresses are
    learned (the peer book hands them to the transport) and the result carries them."""
    core, _, asked = colony_of_four()
    addrs = (b"\x04\x7f\x00\x00\x01\x06\x10\x00",)  # /ip4/127.0.0.1/tcp/4096
    req = asked[N1].msg
    assert isinstance(req, DhtRequest)
    msg = KadMessage(MessageType.GET_PROVIDERS, KEY,
                     provider_peers=(PeerInfo(N0, addrs), PeerInfo(N1)))
    eff = core.handle(Received(N1, DhtResponse(req.rid, msg)), 1.01)
    learned = [e.event for e in eff
               if isinstance(e, Emit) and isinstance(e.event, PeerAddressesLearned)]
    assert learned == [PeerAddressesLearned(N0, addrs)]
    assert found(eff) == []  # no new provider: N0 and N1 were reported at once
    eff = reply(core, asked[N0], [], 1.02) + reply(core, asked[N2], [], 1.03)
    (ld,) = done(eff)
    assert isinstance(ld.result, Providers)
    assert {i.peer: i.addrs for i in ld.result.providers} == {N0: addrs, N1: ()}
