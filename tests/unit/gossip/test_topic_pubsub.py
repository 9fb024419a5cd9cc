"""PubSub core: signed topic messages over HyParView + Plumtree, back to back (no sockets).

Delivery once and in order to every subscriber; forged, tampered, cross-topic, replayed,
stale and unauthorised messages refused, counted and not forwarded.
"""

from __future__ import annotations

import random

from helpers.core_net import CoreNet

from gossip.admission import Admission
from gossip.plumtree import message_id
from gossip.topic_messages import Gossip
from gossip.topic_pubsub import (
    ChainAuthorizer,
    Publish,
    Published,
    PubSub,
    PubSubConfig,
    Subscribe,
    TopicMessage,
)
from gossip.topic_signed import MESSAGE_KIND, open_payload, seal_payload, topic_id
from overlay.core.certs import Certificate
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.effects import Received, Send
from overlay.core.ids import PeerId
from overlay.core.wire import cbor_decode, cbor_encode

KEYS = [KeyPair.from_rng_seed(bytes([i + 1]) * 32) for i in range(8)]
PEERS = [k.peer_id for k in KEYS]
T0 = 1_000_000.0


def build(n: int = 8, **kw: object) -> tuple[CoreNet, list[PubSub]]:
    net = CoreNet(delay_s=0.01, start=T0)
    cores = [PubSub(KEYS[i], PubSubConfig(), random.Random(i), epoch=7, **kw)  # type: ignore[arg-type]
             for i in range(n)]
    net.add_all(zip(PEERS[:n], cores, strict=True))
    for i in range(n):  # each joins through the previous one: a chain of contacts
        net.feed(PEERS[i], Subscribe("news", (PEERS[i - 1],) if i else ()), T0 + i * 0.1)
    net.run_for(5.0)
    return net, cores


def delivered(net: CoreNet, peer: PeerId) -> list[TopicMessage]:
    return [m for m in net.of(TopicMessage, peer) if m.name == "news"]


def test_every_subscriber_gets_each_message_once_in_order() -> None:
    net, cores = build()
    for k in range(5):
        net.feed(PEERS[3], Publish("news", f"m{k}".encode(), ref=k))
    net.run_for(3.0)
    for i, peer in enumerate(PEERS):
        got = delivered(net, peer)
        assert [m.data for m in got] == [f"m{k}".encode() for k in range(5)], i
        assert [m.seq for m in got] == [1, 2, 3, 4, 5]
        assert all(m.publisher == PEERS[3] and m.gap == 0 for m in got)
        assert all(m.local == (i == 3) for m in got)
    assert [p.ref for p in net.of(Published, PEERS[3])] == [0, 1, 2, 3, 4]
    assert all(sum(c.counters.values()) == 0 for c in cores)


def _valid_gossip(net: CoreNet) -> Gossip:
    net.feed(PEERS[0], Publish("news", b"original"))
    net.run_for(2.0)
    [g] = [m for s, _, m in net.sends if s == PEERS[0] and isinstance(m, Gossip)][:1]
    return g


def _inject(net: CoreNet, to: int, payload: bytes) -> list[object]:
    tid = topic_id("news")
    before = len(net.sends)
    net.feed(PEERS[to], Received(PEERS[to - 1], Gossip(tid, message_id(payload), 0, payload)))
    return [m for s, _, m in net.sends[before:] if isinstance(m, Gossip)]


def test_a_forged_message_is_refused_counted_and_not_forwarded() -> None:
    net, cores = build()
    g = _valid_gossip(net)
    env_w, chain = cbor_decode(g.payload)
    env = Envelope.from_wire(env_w)
    body = cbor_decode(env.body)
    body["d"] = b"forged!"
    forged = Envelope(MESSAGE_KIND, cbor_encode(body), env.signer, env.signature)
    forwarded = _inject(net, 5, cbor_encode([forged.to_wire(), chain]))
    assert forwarded == [] and cores[5].counters["forged"] == 1
    assert [m.data for m in delivered(net, PEERS[5])] == [b"original"]
    # Signed by someone else but claiming to be the publisher: the signer is the
    # publisher, so it is simply another publisher's message; a wrong key is forged.
    bad_sig = Envelope(MESSAGE_KIND, env.body, KEYS[6].public.raw, env.signature)
    assert _inject(net, 5, cbor_encode([bad_sig.to_wire(), chain])) == []
    assert cores[5].counters["forged"] == 2


def test_replays_stale_and_cross_topic_messages_are_refused() -> None:
    net, cores = build()
    g = _valid_gossip(net)
    # Same payload within Plumtree's seen window: a duplicate, not delivered again.
    _inject(net, 4, g.payload)
    assert len(delivered(net, PEERS[4])) == 1
    # After the seen window (90 s) Plumtree forgot the id: the order state refuses it.
    net.run_for(120.0)
    assert _inject(net, 4, g.payload) == [] and cores[4].counters["replayed"] == 1
    assert len(delivered(net, PEERS[4])) == 1
    # Our own message coming back after the window is never delivered twice.
    assert _inject(net, 0, g.payload) == [] and cores[0].counters["own_echo"] == 1
    assert len(delivered(net, PEERS[0])) == 1
    # Signed long ago: stale.
    old = seal_payload(KEYS[6], (), "news", 7, 1, T0 - 3600.0, b"old")
    assert _inject(net, 4, old) == [] and cores[4].counters["stale"] == 1
    # Signed for topic "other", sent on "news": malformed (a cross-topic replay).
    other = seal_payload(KEYS[6], (), "other", 7, 1, net.now, b"x")
    assert _inject(net, 4, other) == [] and cores[4].counters["malformed"] == 1
    assert open_payload(other, topic_id("other"), None).data == b"x"


def test_out_of_order_is_held_then_released_with_a_gap() -> None:
    net, cores = build(3)
    pub = KEYS[6]
    p1 = seal_payload(pub, (), "news", 9, 1, net.now, b"1")
    p3 = seal_payload(pub, (), "news", 9, 3, net.now, b"3")
    p2 = seal_payload(pub, (), "news", 9, 2, net.now, b"2")
    p5 = seal_payload(pub, (), "news", 9, 5, net.now, b"5")
    _inject(net, 1, p1)
    _inject(net, 1, p3)  # held: 2 is missing
    assert [m.data for m in delivered(net, PEERS[1])] == [b"1"]
    _inject(net, 1, p2)  # the hole fills: 2 then 3
    assert [m.data for m in delivered(net, PEERS[1])] == [b"1", b"2", b"3"]
    _inject(net, 1, p5)  # 4 never comes: after the hold (1 s) 5 goes with gap 1
    net.run_for(1.5)
    got = delivered(net, PEERS[1])
    assert [(m.seq, m.gap) for m in got] == [(1, 0), (2, 0), (3, 0), (5, 1)]
    # 4 turns up after all: delivered once, flagged late (triggers need it; ordered
    # API streams drop it), and forwarded; a second copy is a replay.
    p4 = seal_payload(pub, (), "news", 9, 4, net.now, b"4")
    _inject(net, 1, p4)
    got = delivered(net, PEERS[1])
    assert [(m.seq, m.late) for m in got][-1] == (4, True) and cores[1].counters["late"] == 1
    assert [m.late for m in got[:-1]] == [False] * 4
    net.run_for(1.0)
    assert any(m.seq == 4 and m.late for m in delivered(net, PEERS[2]))  # forwarded
    net.run_for(120.0)  # past Plumtree's seen window: the order state refuses a copy
    assert _inject(net, 1, p4) == [] and cores[1].counters["replayed"] == 1
    assert sum(m.seq == 4 for m in delivered(net, PEERS[1])) == 1


def test_colony_mode_refuses_a_publisher_without_the_role() -> None:
    owner = KeyPair.from_rng_seed(b"\x77" * 32)
    colony = owner.public.raw

    def chain(i: int, roles: list[str]) -> tuple[Envelope, ...]:
        cert = Certificate.issue(owner, owner.public, PEERS[i], roles, T0 - 10, T0 + 86400)
        return (cert.envelope,)

    net = CoreNet(delay_s=0.01, start=T0)
    cores = []
    for i in range(4):
        roles = ["member", "submit"] if i == 0 else ["member"]
        cores.append(PubSub(KEYS[i], PubSubConfig(), random.Random(i), epoch=1,
                            colony=colony, chain=chain(i, roles),
                            authorizer=ChainAuthorizer(Admission(colony))))
    net.add_all(zip(PEERS[:4], cores, strict=True))
    for i in range(4):
        net.feed(PEERS[i], Subscribe("news", (PEERS[i - 1],) if i else ()), T0 + i * 0.1)
    net.run_for(5.0)
    net.feed(PEERS[0], Publish("news", b"allowed"))
    net.feed(PEERS[2], Publish("news", b"member only"))
    net.run_for(2.0)
    for i in (1, 3):
        assert [m.data for m in net.of(TopicMessage, PEERS[i])] == [b"allowed"]
    assert sum(c.counters["unauthorized"] for c in cores) >= 1
    # No chain at all (open-mode message in a colony): refused too.
    tid = topic_id("news", colony)
    bare = seal_payload(KEYS[5], (), "news", 1, 1, net.now, b"no chain")
    net.feed(PEERS[1], Received(PEERS[0], Gossip(tid, message_id(bare), 0, bare)))
    assert [m.data for m in net.of(TopicMessage, PEERS[1])] == [b"allowed"]


def test_refused_messages_cost_no_sends() -> None:
    net, cores = build(3)
    junk = b"\x82\x01\x02"  # CBOR [1, 2]: not [envelope, chain]
    tid = topic_id("news")
    out = cores[1].handle(Received(PEERS[0], Gossip(tid, message_id(junk), 0, junk)), net.now)
    assert not [e for e in out if isinstance(e, Send)]
    assert cores[1].counters["malformed"] == 1
