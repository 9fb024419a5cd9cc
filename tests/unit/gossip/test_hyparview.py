"""HyParView core: each protocol rule on one node with a hand-advanced `now`."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gossip.hyparview import HyParView, HyParViewConfig, NeighborDown, NeighborUp
from gossip.topic_messages import (
    Disconnect,
    ForwardJoin,
    Join,
    Neighbor,
    NeighborReply,
    Shuffle,
    ShuffleReply,
)
from overlay.core.effects import Effect, Emit, Send, SetTimer
from overlay.core.errors import ConfigError
from overlay.core.ids import PeerId

TOPIC = bytes(range(32))
P = [PeerId.from_ed25519(bytes([i]) * 32) for i in range(1, 60)]
ME = P[0]


def node(**cfg: Any) -> HyParView:
    return HyParView(ME, TOPIC, HyParViewConfig(**cfg), random.Random(7))


def sends(effects: list[Effect], kind: type | None = None) -> list[tuple[PeerId, Any]]:
    return [(e.peer, e.msg) for e in effects
            if isinstance(e, Send) and (kind is None or isinstance(e.msg, kind))]


def events(effects: list[Effect]) -> list[Any]:
    return [e.event for e in effects if isinstance(e, Emit)]


def with_active(h: HyParView, peers: list[PeerId]) -> None:
    for p in peers:
        h.on_message(p, Neighbor(TOPIC, True), 0.0)
    assert list(h.active) == peers


def test_for_size_follows_log10_plus_one_and_six_times() -> None:
    assert HyParViewConfig.for_size(10_000).active_size == 5
    assert HyParViewConfig.for_size(10_000).passive_size == 30
    assert HyParViewConfig.for_size(100).active_size == 3
    assert HyParViewConfig.for_size(100_000).active_size == 6
    with pytest.raises(ConfigError):
        HyParViewConfig(prwl=7, arwl=6)


def test_join_goes_to_the_first_contact_and_keeps_the_rest_passive() -> None:
    h = node()
    out = h.join((P[1], P[2], P[3]), 0.0)
    assert sends(out) == [(P[1], Join(TOPIC))]
    assert P[1] in h.pending and list(h.passive) == [P[2], P[3]]
    assert any(isinstance(e, SetTimer) and e.timer == ("hpv", TOPIC, "nbr", P[1]) for e in out)
    out = h.on_message(P[1], NeighborReply(TOPIC, True), 0.1)
    assert list(h.active) == [P[1]] and not h.pending
    assert events(out) == [NeighborUp(TOPIC, P[1])]


def test_contact_accepts_joiner_and_starts_forward_join_walks() -> None:
    h = node()
    with_active(h, P[1:4])
    out = h.on_message(P[9], Join(TOPIC), 1.0)
    assert P[9] in h.active
    assert (P[9], NeighborReply(TOPIC, True)) in sends(out)
    fj = sends(out, ForwardJoin)
    assert sorted(p.raw for p, _ in fj) == sorted(p.raw for p in P[1:4])
    assert all(m.ttl == 6 and m.peer == P[9] for _, m in fj)


def test_forward_join_adds_passive_at_prwl_and_forwards_with_ttl_minus_one() -> None:
    h = node()
    with_active(h, P[1:4])
    out = h.on_message(P[1], ForwardJoin(TOPIC, P[9], 3), 1.0)
    assert P[9] in h.passive
    [(to, msg)] = sends(out)
    assert to != P[1] and msg == ForwardJoin(TOPIC, P[9], 2)


def test_forward_join_walk_ends_with_a_high_priority_neighbor_request() -> None:
    h = node()
    with_active(h, P[1:4])
    out = h.on_message(P[1], ForwardJoin(TOPIC, P[9], 0), 1.0)
    assert sends(out) == [(P[9], Neighbor(TOPIC, True))]
    # A node with one neighbour ends the walk too, whatever the TTL.
    h2 = node()
    with_active(h2, [P[1]])
    assert sends(h2.on_message(P[1], ForwardJoin(TOPIC, P[9], 5), 1.0)) == [
        (P[9], Neighbor(TOPIC, True))]


def test_low_priority_refused_when_full_high_evicts_a_random_neighbour() -> None:
    h = node(active_size=3)
    with_active(h, P[1:4])
    out = h.on_message(P[9], Neighbor(TOPIC, False), 1.0)
    assert sends(out) == [(P[9], NeighborReply(TOPIC, False))]
    assert P[9] in h.passive and P[9] not in h.active
    out = h.on_message(P[10], Neighbor(TOPIC, True), 1.0)
    assert P[10] in h.active and len(h.active) == 3
    [(victim, msg)] = sends(out, Disconnect)
    assert msg.alive and victim in h.passive and victim not in h.active
    assert NeighborDown(TOPIC, victim) in events(out)


def test_failed_neighbour_is_replaced_from_the_passive_view() -> None:
    h = node(active_size=2)
    with_active(h, P[1:3])
    h.on_message(P[5], ShuffleReply(TOPIC, (P[5], P[6])), 1.0)
    out = h.peer_failed(P[1], 2.0, unreachable=False)
    assert NeighborDown(TOPIC, P[1]) in events(out)
    assert P[1] not in h.passive and P[1] not in h.active
    [(to, msg)] = sends(out, Neighbor)
    assert to in (P[5], P[6]) and msg.high is False  # still has one neighbour
    # Losing the last one asks with high priority (cannot be refused).
    h.on_message(to, NeighborReply(TOPIC, False), 2.1)
    out = h.peer_failed(P[2], 3.0, unreachable=False)
    assert all(m.high for _, m in sends(out, Neighbor))


def test_neighbor_timeout_drops_the_peer_and_tries_another() -> None:
    h = node(active_size=1)
    h.join((P[1], P[2]), 0.0)
    out = h.on_timer(("hpv", TOPIC, "nbr", P[1]), 1.0)
    assert P[1] not in h.passive and P[1] not in h.pending
    assert sends(out) == [(P[2], Neighbor(TOPIC, True))]
    # A stale timer (no request pending) does nothing.
    assert h.on_timer(("hpv", TOPIC, "nbr", P[7]), 1.0) == []


def test_a_reply_after_our_timeout_is_undone_with_disconnect() -> None:
    h = node()
    h.join((P[1],), 0.0)
    h.on_timer(("hpv", TOPIC, "nbr", P[1]), 1.0)
    out = h.on_message(P[1], NeighborReply(TOPIC, True), 1.5)
    assert sends(out) == [(P[1], Disconnect(TOPIC, True))]
    assert P[1] not in h.active and h.counters["late_reply"] == 1


def test_disconnect_alive_keeps_the_peer_passive_and_not_alive_forgets_it() -> None:
    h = node()
    with_active(h, P[1:3])
    h.on_message(P[1], Disconnect(TOPIC, True), 1.0)
    assert P[1] in h.passive and P[1] not in h.active
    h.on_message(P[2], Disconnect(TOPIC, False), 1.0)
    assert P[2] not in h.passive and P[2] not in h.active


def test_shuffle_timer_sends_ka_active_kp_passive_and_self() -> None:
    h = node()
    with_active(h, P[1:6])
    h.on_message(P[20], ShuffleReply(TOPIC, tuple(P[20:30])), 0.0)
    out = h.on_timer(("hpv", TOPIC, "shuffle"), 10.0)
    [(to, sh)] = sends(out, Shuffle)
    assert to in h.active and sh.origin == ME and sh.ttl == 6
    assert sh.peers[0] == ME and len(sh.peers) == 1 + 3 + 4
    assert to not in sh.peers
    [t] = [e for e in out if isinstance(e, SetTimer)]
    assert t.timer == ("hpv", TOPIC, "shuffle") and 10.0 + 54 <= t.at <= 10.0 + 66


def test_shuffle_walk_end_replies_and_merges_evicting_what_it_sent() -> None:
    h = node(passive_size=4)
    with_active(h, [P[1]])
    h.on_message(P[1], ShuffleReply(TOPIC, tuple(P[10:14])), 0.0)
    assert len(h.passive) == 4
    sh = Shuffle(TOPIC, P[30], (P[30], P[31], P[32]), 4)
    out = h.on_message(P[1], sh, 1.0)  # one neighbour: the walk ends here
    [(to, reply)] = sends(out, ShuffleReply)
    assert to == P[30] and len(reply.peers) == 3
    assert {P[30], P[31], P[32]} <= set(h.passive) and len(h.passive) == 4
    # The merge evicted the peers sent in the reply first (§4.4).
    assert set(h.passive) - {P[30], P[31], P[32]} == set(P[10:14]) - set(reply.peers)


def test_shuffle_is_forwarded_while_ttl_and_neighbours_last() -> None:
    h = node()
    with_active(h, P[1:4])
    out = h.on_message(P[1], Shuffle(TOPIC, P[30], (P[30],), 4), 1.0)
    [(to, fwd)] = sends(out)
    assert to not in (P[1], P[30]) and fwd.ttl == 3


def test_leave_disconnects_every_neighbour_as_not_alive() -> None:
    h = node()
    with_active(h, P[1:4])
    out = h.leave()
    assert sorted(p.raw for p, m in sends(out, Disconnect) if not m.alive) == sorted(
        p.raw for p in P[1:4])
    assert not h.active


def test_messages_from_self_are_ignored() -> None:
    h = node()
    assert h.on_message(ME, Join(TOPIC), 0.0) == []
    assert ME not in h.active
