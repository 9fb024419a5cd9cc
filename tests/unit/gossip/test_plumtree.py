"""Plumtree core: eager/lazy push, PRUNE, IHAVE → GRAFT, optimisation, bounded caches."""

from __future__ import annotations

from typing import Any

from gossip.plumtree import Delivered, Plumtree, PlumtreeConfig, message_id
from gossip.topic_messages import Gossip, Graft, IHave, Prune
from overlay.core.effects import Effect, Emit, Send, SetTimer
from overlay.core.ids import PeerId

TOPIC = bytes(32)
P = [PeerId.from_ed25519(bytes([i]) * 32) for i in range(1, 12)]
ME = P[0]


def tree(peers: list[PeerId], **cfg: Any) -> Plumtree:
    t = Plumtree(ME, TOPIC, PlumtreeConfig(**cfg))
    for p in peers:
        t.neighbor_up(p)
    return t


def sends(effects: list[Effect]) -> list[tuple[PeerId, Any]]:
    return [(e.peer, e.msg) for e in effects if isinstance(e, Send)]


def gossip(payload: bytes, rnd: int) -> Gossip:
    return Gossip(TOPIC, message_id(payload), rnd, payload)


def test_broadcast_pushes_eagerly_to_every_neighbour_and_delivers_locally() -> None:
    t = tree(P[1:4])
    out = t.broadcast(b"hello", 0.0)
    assert sorted(p.raw for p, _ in sends(out)) == sorted(p.raw for p in P[1:4])
    assert all(m == gossip(b"hello", 0) for _, m in sends(out))
    assert [e.event for e in out if isinstance(e, Emit)] == [
        Delivered(TOPIC, message_id(b"hello"), b"hello", 0, None)]


def test_first_copy_is_forwarded_with_round_plus_one_duplicate_prunes() -> None:
    t = tree(P[1:4])
    out = t.on_message(P[1], gossip(b"x", 2), 0.0)
    assert sorted(p.raw for p, _ in sends(out)) == sorted(p.raw for p in P[2:4])
    assert all(m.round == 3 for _, m in sends(out))
    [ev] = [e.event for e in out if isinstance(e, Emit)]
    assert ev.hop == 3 and ev.sender == P[1]
    out = t.on_message(P[2], gossip(b"x", 2), 0.1)
    assert sends(out) == [(P[2], Prune(TOPIC))]
    assert P[2] in t.lazy and P[2] not in t.eager


def test_lazy_peers_get_batched_ihaves_after_the_delay() -> None:
    t = tree(P[1:3])
    t.on_message(P[2], Prune(TOPIC), 0.0)
    out = t.broadcast(b"a", 0.0) + t.broadcast(b"b", 0.01)
    timers = [e for e in out
              if isinstance(e, SetTimer) and isinstance(e.timer, tuple) and e.timer[2] == "ihave"]
    assert len(timers) == 1 and timers[0].at == 0.05
    out = t.on_timer(("pt", TOPIC, "ihave"), 0.05)
    assert sends(out) == [(P[2], IHave(TOPIC, ((message_id(b"a"), 0), (message_id(b"b"), 0))))]


def test_missing_id_is_grafted_after_timeout_then_next_announcer() -> None:
    t = tree(P[1:4])
    mid = message_id(b"m")
    out = t.on_message(P[1], IHave(TOPIC, ((mid, 3),)), 0.0)
    [timer] = [e for e in out if isinstance(e, SetTimer)]
    assert timer.timer == ("pt", TOPIC, "graft", mid) and timer.at == 0.5
    t.on_message(P[2], IHave(TOPIC, ((mid, 4),)), 0.1)
    out = t.on_timer(timer.timer, 0.5)
    assert sends(out) == [(P[1], Graft(TOPIC, mid, 3))]
    out = t.on_timer(timer.timer, 0.75)
    assert sends(out) == [(P[2], Graft(TOPIC, mid, 4))]
    # Once the payload arrived, a timer does nothing.
    t.on_message(P[2], gossip(b"m", 4), 0.8)
    assert sends(t.on_timer(timer.timer, 1.0)) == []


def test_graft_is_answered_from_the_cache_and_makes_the_link_eager() -> None:
    t = tree(P[1:3])
    t.on_message(P[2], Prune(TOPIC), 0.0)
    t.broadcast(b"c", 0.0)
    out = t.on_message(P[2], Graft(TOPIC, message_id(b"c"), 0), 0.2)
    assert sends(out) == [(P[2], gossip(b"c", 0))]
    assert P[2] in t.eager
    out = t.on_message(P[2], Graft(TOPIC, message_id(b"unknown"), 0), 0.2)
    assert sends(out) == [] and t.counters["graft_miss"] == 1


def test_optimisation_swaps_a_long_eager_path_for_a_short_lazy_one() -> None:
    t = tree(P[1:4])
    t.on_message(P[2], Prune(TOPIC), 0.0)  # P[2] lazy
    mid = message_id(b"o")
    t.on_message(P[2], IHave(TOPIC, ((mid, 2),)), 0.0)
    out = t.on_message(P[1], gossip(b"o", 9), 0.1)  # 9 - 2 ≥ threshold 7
    assert (P[2], Graft(TOPIC, None, 2)) in sends(out)
    assert (P[1], Prune(TOPIC)) in sends(out)
    assert P[2] in t.eager and P[1] in t.lazy


def test_a_payload_whose_id_does_not_match_is_dropped() -> None:
    t = tree(P[1:3])
    out = t.on_message(P[1], Gossip(TOPIC, message_id(b"real"), 0, b"fake"), 0.0)
    assert out == [] and t.counters["bad_id"] == 1


def test_neighbor_down_forgets_the_peer_and_its_announcements() -> None:
    t = tree(P[1:3])
    t.on_message(P[1], IHave(TOPIC, ((message_id(b"z"), 1),)), 0.0)
    t.neighbor_down(P[1])
    assert P[1] not in t.eager and not t.missing


def test_caches_are_bounded_by_count_and_expire_by_age() -> None:
    t = tree([P[1]], cache_max=16, seen_max=32, cache_ttl_s=5.0, seen_ttl_s=10.0)
    for i in range(100):
        t.broadcast(b"p%d" % i, i * 0.01)
    assert len(t.cache) == 16 and len(t.seen) == 32
    assert t.counters["cache_evicted"] == 84 and t.counters["seen_evicted"] == 68
    t.on_timer(("pt", TOPIC, "evict"), 20.0)
    assert not t.cache and not t.seen


def test_missing_ids_are_bounded() -> None:
    t = tree([P[1]], missing_max=8, announcers_max=2)
    for i in range(50):
        t.on_message(P[1], IHave(TOPIC, ((message_id(b"%d" % i), 1),)), 0.0)
    assert len(t.missing) == 8 and t.counters["missing_evicted"] == 42
