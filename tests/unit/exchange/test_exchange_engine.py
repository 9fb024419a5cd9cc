"""Bitswap engines wired back to back through the in-memory router (virtual time)."""

import hashlib
from typing import Any

from helpers.core_net import CoreNet

from overlay.core.crypto import KeyPair
from overlay.core.effects import Disconnect, PeerUnreachable
from overlay.core.ids import PeerId
from overlay.exchange.engine import (
    BlockReceived,
    BlockUnavailable,
    Exchange,
    ExchangeConfig,
    Fetch,
    PeerPenalised,
)
from overlay.exchange.messages import BitswapMessage, Block


def cid_of(data: bytes) -> bytes:
    return b"\x01\x55\x12\x20" + hashlib.sha256(data).digest()


class DictSource:
    def __init__(self, blocks: dict[bytes, bytes] | None = None) -> None:
        self.blocks = dict(blocks or {})

    def get_block(self, cid: bytes) -> bytes | None:
        return self.blocks.get(cid)

    def has_block(self, cid: bytes) -> bool:
        return cid in self.blocks


class LyingSource(DictSource):
    """Answers every want with bytes that do not match the CID."""

    def get_block(self, cid: bytes) -> bytes | None:
        return b"not what you asked for " + cid[-4:]


def peer(i: int) -> PeerId:
    return KeyPair(bytes([i]) * 32).peer_id


def colony(
    n_providers: int, blocks: dict[bytes, bytes], **cfg: Any
) -> tuple[CoreNet, Exchange, list[PeerId]]:
    router = CoreNet(delay_s=0.005)
    me = peer(100)
    fetcher = Exchange(me, DictSource(), ExchangeConfig(**cfg))
    router.add(me, fetcher)
    providers = []
    for i in range(n_providers):
        p = peer(i + 1)
        router.add(p, Exchange(p, DictSource(blocks)))
        providers.append(p)
    return router, fetcher, providers


def received(router: CoreNet) -> list[BlockReceived]:
    return router.of(BlockReceived)


def test_fetch_spreads_over_providers_and_verifies() -> None:
    blocks = {cid_of(bytes([i]) * 100): bytes([i]) * 100 for i in range(60)}
    router, fetcher, providers = colony(3, blocks, max_inflight_per_peer=8)
    me = fetcher.me
    router.inject(me, Fetch(tuple(blocks), tuple(providers)))
    router.run_for(5)
    got = received(router)
    assert {b.cid for b in got} == set(blocks)
    assert all(blocks[b.cid] == b.data for b in got)
    assert set(fetcher.stats.received_by_peer) == set(providers)
    assert min(fetcher.stats.received_by_peer.values()) >= 10
    assert fetcher.wanted() == []
    assert_queues_consistent(fetcher)


def test_dont_have_moves_want_to_next_provider() -> None:
    data = b"only provider 2 has this"
    cid = cid_of(data)
    router, fetcher, providers = colony(2, {})
    router.nodes[providers[1]].source.blocks[cid] = data  # type: ignore[attr-defined]
    router.inject(fetcher.me, Fetch((cid,), tuple(providers)))
    router.run_for(2)
    assert [b.peer for b in received(router)] == [providers[1]]


def test_timeout_moves_want_and_unavailable_after_rounds() -> None:
    data = b"x" * 10
    cid = cid_of(data)
    router, fetcher, providers = colony(2, {cid: data}, want_timeout_s=1.0)
    router.kill(providers[0])  # silent: its wants time out
    router.inject(fetcher.me, Fetch((cid,), (providers[0],)))
    router.run_for(5)
    (ev,) = [e for _, _, e in router.emitted if isinstance(e, BlockUnavailable)]
    assert ev.cid == cid and "timed out 4 times (1 providers)" in ev.reason
    assert fetcher.stats.timeouts == 4  # max_timeouts: a silent provider is asked again
    router.inject(fetcher.me, Fetch((cid,), (providers[1],)))
    router.run_for(5)
    assert [b.cid for b in received(router)] == [cid]


def test_lying_provider_is_penalised_disconnected_and_dropped() -> None:
    blocks = {cid_of(bytes([i]) * 50): bytes([i]) * 50 for i in range(10)}
    router, fetcher, providers = colony(1, blocks, want_timeout_s=1.0)
    liar = peer(50)
    router.add(liar, Exchange(liar, LyingSource()))
    router.inject(fetcher.me, Fetch(tuple(blocks), (liar, *providers)))
    router.run_for(10)
    got = received(router)
    assert {b.cid for b in got} == set(blocks)  # all from the honest provider
    assert all(b.peer == providers[0] for b in got)
    assert any(isinstance(e, PeerPenalised) and e.peer == liar for _, _, e in router.emitted)
    assert any(d[2] == liar for d in router.disconnects)
    assert liar not in fetcher.providers


def test_unreachable_provider_releases_its_wants() -> None:
    blocks = {cid_of(bytes([i])): bytes([i]) for i in range(4)}
    _router, fetcher, providers = colony(2, blocks)
    effects = fetcher.handle(Fetch(tuple(blocks), tuple(providers)), 0.0)
    assert fetcher.inflight(providers[0]) > 0
    fetcher.handle(PeerUnreachable(providers[0]), 0.1)
    assert fetcher.inflight(providers[0]) == 0
    assert providers[0] not in fetcher.providers
    assert fetcher.inflight(providers[1]) == 4
    assert not any(isinstance(e, Disconnect) for e in effects)


def test_serving_batches_by_size_and_answers_dont_have() -> None:
    big = {cid_of(bytes([i]) * 1000): bytes([i]) * 1000 for i in range(5)}
    server = Exchange(peer(1), DictSource(big), ExchangeConfig(max_response_bytes=2500))
    missing = cid_of(b"missing")
    from overlay.core.effects import Received, Send
    from overlay.exchange.messages import WantEntry

    wants = tuple(WantEntry(c, send_dont_have=True) for c in [*big, missing])
    out = server.handle(Received(peer(2), BitswapMessage(wants=wants)), 0.0)
    msgs = [e.msg for e in out if isinstance(e, Send)]
    assert [len(m.blocks) for m in msgs] == [2, 2, 1]
    assert msgs[-1].presences[0].cid == missing
    served = [b for m in msgs for b in m.blocks]
    assert served == [Block(c, d) for c, d in big.items()]


def test_each_block_is_hashed_once(monkeypatch: Any) -> None:
    """A block from the wire decoder (CID rebuilt from its hash) is not hashed again;
    one built in-process is hashed by the engine, and a mismatch is still refused."""
    from overlay.core.cid import verify_bytes as real
    from overlay.core.effects import Received
    from overlay.exchange import engine as engine_mod

    hashed: list[bytes] = []

    def counting(cid: bytes, data: bytes) -> bool:
        hashed.append(cid)
        return real(cid, data)

    monkeypatch.setattr(engine_mod, "verify_bytes", counting)
    me, prov = peer(100), peer(1)
    datas = [b"one", b"two", b"three"]
    ex = Exchange(me, DictSource())
    ex.handle(Fetch(tuple(cid_of(d) for d in datas), (prov,)), 0.0)
    wire = BitswapMessage(blocks=(Block(cid_of(datas[0]), datas[0]),)).to_bytes()
    out = ex.handle(Received(prov, BitswapMessage.from_bytes(wire)), 0.1)
    assert hashed == [] and [e.event.cid for e in out if hasattr(e, "event")
                             and isinstance(e.event, BlockReceived)] == [cid_of(datas[0])]
    built = BitswapMessage(blocks=(Block(cid_of(datas[1]), datas[1]),))
    out = ex.handle(Received(prov, built), 0.2)
    assert hashed == [cid_of(datas[1])]
    assert any(isinstance(getattr(e, "event", None), BlockReceived) for e in out)
    forged = BitswapMessage(blocks=(Block(cid_of(datas[2]), b"forged"),))
    out = ex.handle(Received(prov, forged), 0.3)
    assert not any(isinstance(getattr(e, "event", None), BlockReceived) for e in out)
    assert ex.stats.unsolicited_blocks == 1 and cid_of(datas[2]) in ex.wanted()


def assert_queues_consistent(ex: Exchange) -> None:
    """Every want is idle or in flight, never both; in-flight ones in deadline order."""
    waiting = [*ex._retry, *ex._idle]
    assert len(waiting) == len(set(waiting)) and set(waiting).isdisjoint(ex._out)
    assert set(waiting) | set(ex._out) == set(ex._wants)
    assert all(ex._wants[c].peer is not None for c in ex._out)
    assert all(ex._wants[c].peer is None for c in waiting)
    deadlines = [ex._wants[c].deadline for c in ex._out]
    assert deadlines == sorted(deadlines)


def test_a_long_queue_sends_only_the_window_and_times_out_in_order() -> None:
    from overlay.core.effects import Send, SetTimer, TimerFired
    from overlay.exchange.engine import TIMER

    me, prov = peer(100), peer(1)
    ex = Exchange(me, DictSource(), ExchangeConfig(max_inflight_per_peer=4, want_timeout_s=1.0))
    wants = tuple(cid_of(i.to_bytes(4, "big")) for i in range(10_000))
    out = ex.handle(Fetch(wants[:2], (prov,)), 0.0)
    out += ex.handle(Fetch(wants[2:], ()), 0.5)
    sent = [e.cid for eff in out if isinstance(eff, Send) for e in eff.msg.wants]
    assert sent == list(wants[:4])  # the window, in queue order
    assert [eff.at for eff in out if isinstance(eff, SetTimer)] == [1.0]
    assert len(ex._idle) + len(ex._retry) == 10_000 - 4
    assert_queues_consistent(ex)
    out = ex.handle(TimerFired(TIMER), 1.0)  # the first two (sent at 0.0) are due
    cancelled = [e.cid for eff in out if isinstance(eff, Send) for e in eff.msg.wants
                 if e.cancel]
    assert cancelled == list(wants[:2]) and ex.stats.timeouts == 2
    assert_queues_consistent(ex)


def test_cancel_fetch_sends_cancels_to_the_peer_that_had_the_want() -> None:
    from overlay.core.effects import Send
    from overlay.exchange.engine import CancelFetch

    me, prov = peer(100), peer(1)
    ex = Exchange(me, DictSource(), ExchangeConfig(max_inflight_per_peer=1))
    a, b = cid_of(b"a"), cid_of(b"b")
    ex.handle(Fetch((a, b), (prov,)), 0.0)  # a in flight, b idle
    out = ex.handle(CancelFetch((a, b)), 0.1)
    sends = [eff for eff in out if isinstance(eff, Send)]
    assert [(s.peer, [e.cid for e in s.msg.wants]) for s in sends] == [(prov, [a])]
    assert ex.wanted() == [] and ex.inflight(prov) == 0
    assert_queues_consistent(ex)


def test_blocks_arriving_after_a_cancel_do_not_penalise_the_provider() -> None:
    """A cancel races the blocks already sent: they are late duplicates, and the
    provider stays (it used to be disconnected after three of them)."""
    from overlay.core.effects import Received
    from overlay.exchange.engine import CancelFetch

    me, prov = peer(100), peer(1)
    ex = Exchange(me, DictSource(), ExchangeConfig())
    datas = [bytes([i]) * 64 for i in range(5)]
    cids = tuple(cid_of(d) for d in datas)
    ex.handle(Fetch(cids, (prov,)), 0.0)
    ex.handle(CancelFetch(cids), 0.1)
    late = BitswapMessage(blocks=tuple(Block(c, d) for c, d in zip(cids, datas, strict=True)))
    out = ex.handle(Received(prov, late), 0.2)
    assert not [e for e in out if isinstance(e, Disconnect)]
    assert ex.stats.unsolicited_blocks == 0 and ex.stats.duplicate_blocks == 5


def test_wants_lost_twice_are_reported_unavailable_behind_a_full_window() -> None:
    """A provider whose blocks never arrive: the wants that timed out in both rounds
    are reported unavailable even though newer wants fill the window again."""
    from overlay.core.effects import Emit, TimerFired
    from overlay.exchange.engine import TIMER

    me, prov = peer(100), peer(1)
    ex = Exchange(me, DictSource(), ExchangeConfig(max_inflight_per_peer=2, want_timeout_s=1.0,
                                                 max_timeouts=2))
    wants = tuple(cid_of(i.to_bytes(4, "big")) for i in range(6))
    ex.handle(Fetch(wants, (prov,)), 0.0)
    gone: dict[bytes, float] = {}
    for t in range(1, 12):
        out = ex.handle(TimerFired(TIMER), float(t))
        gone.update((e.event.cid, t) for e in out
                    if isinstance(e, Emit) and isinstance(e.event, BlockUnavailable))
        assert_queues_consistent(ex)
    assert sorted(gone) == sorted(wants) and ex.wanted() == []
    # Retried before never-sent wants: the first window fails twice and is settled
    # at its second timeout, not after the whole queue has been cycled through.
    assert gone[wants[0]] == gone[wants[1]] == 2


def test_a_dropped_response_is_re_wanted_from_the_only_provider_until_it_arrives() -> None:
    """Frame loss (a provider's full send queue) is not DONT_HAVE: the only provider's
    responses carrying one block are dropped three times in a row; the want is re-sent
    to it on every timeout and the block arrives, it is never reported unavailable."""
    blocks = {cid_of(bytes([i]) * 100): bytes([i]) * 100 for i in range(20)}
    lost = next(iter(blocks))
    router, fetcher, (prov,) = colony(1, blocks, want_timeout_s=1.0)
    drops = {"left": 3}

    def lose(src: PeerId, dst: PeerId, msg: Any) -> bool:
        if src == prov and any(b.cid == lost for b in msg.blocks) and drops["left"]:
            drops["left"] -= 1
            return True
        return False

    router.hold = lose
    router.inject(fetcher.me, Fetch(tuple(blocks), (prov,)))
    router.run_for(10)
    router.drop_held()
    assert router.of(BlockUnavailable) == []
    assert {b.cid for b in received(router)} == set(blocks)
    assert fetcher.stats.timeouts == 3 * len(blocks)  # the lost responses held them all
    assert fetcher.stats.rewants == 3 * len(blocks) and fetcher.wanted() == []
    t_lost = next(t for t, _, e in router.emitted
                  if isinstance(e, BlockReceived) and e.cid == lost)
    assert t_lost < 3 * 1.0 + 0.5  # re-wanted at each timeout, not after a stall


def test_a_provider_that_only_times_out_is_given_up_after_max_timeouts() -> None:
    data = b"x" * 10
    cid = cid_of(data)
    router, fetcher, (prov,) = colony(1, {cid: data}, want_timeout_s=1.0, max_timeouts=4)
    router.kill(prov)
    router.inject(fetcher.me, Fetch((cid,), (prov,)))
    router.run_for(10)
    (ev,) = router.of(BlockUnavailable)
    assert "timed out 4 times" in ev.reason and fetcher.stats.timeouts == 4


def test_the_only_provider_unreachable_once_is_asked_again_not_stalled() -> None:
    """A send to the only provider failed (its stream reset, the frames were dropped:
    the daemon reports PeerUnreachable). Its wants are re-sent to it at once and the
    fetch completes; before, the provider was forgotten and the wants waited for one
    until the fetch's stall limit."""
    blocks = {cid_of(bytes([i]) * 100): bytes([i]) * 100 for i in range(10)}
    router, fetcher, (prov,) = colony(1, blocks, want_timeout_s=15.0)
    router.hold = lambda src, dst, msg: dst == prov and not router.sends[:-1]
    router.feed(fetcher.me, Fetch(tuple(blocks), (prov,)), 0.0)
    assert router.drop_held() == 1  # the want-list was lost with the stream
    router.feed(fetcher.me, PeerUnreachable(prov), 0.1)
    router.run_until(1.0)
    assert {b.cid for b in received(router)} == set(blocks)
    assert router.of(BlockUnavailable) == [] and fetcher.providers == [prov]


def test_the_only_provider_unreachable_for_good_is_reported_unavailable() -> None:
    data = b"x" * 10
    cid = cid_of(data)
    router, fetcher, (prov,) = colony(1, {cid: data}, want_timeout_s=15.0, max_timeouts=3)
    router.kill(prov)
    router.feed(fetcher.me, Fetch((cid,), (prov,)), 0.0)
    for t in (0.1, 0.2, 0.3):
        router.feed(fetcher.me, PeerUnreachable(prov), t)
    (ev,) = router.of(BlockUnavailable)
    assert "3 times" in ev.reason and router.now < 1.0


def test_a_slow_provider_answering_in_order_is_waited_for_not_timed_out() -> None:
    """A slow link (a relay, a lossy WAN) drains a full window more slowly than the
    want timeout. While the provider keeps answering the wants sent before one, that
    want's deadline moves on; a want it skipped (a later one was answered) times out
    at once, and so does every want once the provider falls silent."""
    from overlay.core.effects import Received, Send, TimerFired
    from overlay.exchange.engine import TIMER

    me, prov = peer(100), peer(1)
    ex = Exchange(me, DictSource(), ExchangeConfig(max_inflight_per_peer=4, want_timeout_s=1.0))
    datas = [bytes([i]) * 64 for i in range(8)]
    cids = [cid_of(d) for d in datas]

    def deliver(i: int, at: float) -> list[Any]:
        return ex.handle(Received(prov, BitswapMessage(blocks=(Block(cids[i], datas[i]),))), at)

    def cancels(out: list[Any]) -> list[bytes]:
        return [e.cid for eff in out if isinstance(eff, Send) for e in eff.msg.wants if e.cancel]

    ex.handle(Fetch(tuple(cids), (prov,)), 0.0)  # 0..3 in flight (window 4)
    deliver(0, 0.9)  # 4 goes out at 0.9
    assert cancels(ex.handle(TimerFired(TIMER), 1.0)) == []  # 1..3 queued behind: waited
    assert ex.stats.timeouts == 0 and ex.stats.deferrals == 3
    assert_queues_consistent(ex)
    deliver(1, 1.8)  # 5 goes out at 1.8
    assert cancels(ex.handle(TimerFired(TIMER), 2.0)) == []  # 2, 3 still behind
    deliver(3, 2.5)  # 3 answered, 2 skipped: 2's want or its answer was lost
    out = ex.handle(TimerFired(TIMER), 3.0)
    assert cancels(out) == [cids[2]] and ex.stats.timeouts == 1
    assert [e.cid for eff in out if isinstance(eff, Send) for e in eff.msg.wants
            if not e.cancel] == [cids[2]]  # re-wanted at once
    assert_queues_consistent(ex)
    # Silence from now on: every want in flight times out within one timeout of the
    # last answer (2.5), deferred at most once more.
    timed_out: set[bytes] = set(cancels(ex.handle(TimerFired(TIMER), 3.6)))
    timed_out |= set(cancels(ex.handle(TimerFired(TIMER), 4.1)))
    assert {cids[4], cids[5]} <= timed_out
    assert ex.stats.blocks_received == 3 and ex.wanted() and not ex.stats.want_drops
