"""Topics on real daemons: 9 `colony daemon` processes on 127.0.0.1.

Node 0 publishes; nodes 1–8 subscribe through the SDK (one NDJSON stream each). Every
message must reach every subscriber exactly once, in order. A peer outside the swarm
(a Transport in this process with its own key) then posts a forged message (data
changed after signing) and an unsigned one straight to node 4: both are refused,
counted in /v1/stats drops, delivered nowhere. Then node 8 is killed (SIGKILL): the
messages published after it (and one by `colony topic pub`) reach the 7 subscribers
left.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import Cluster, Node, colony_cmd, wait_for

from gossip.plumtree import message_id
from gossip.topic_messages import Gossip
from gossip.topic_signed import MESSAGE_KIND, seal_payload, topic_id
from overlay.client import Colony
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.wire import cbor_decode, cbor_encode
from overlay.runtime.net.transport import Codec, Transport
from overlay.runtime.services.topics import PROTO_TOPICS

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

N = 9
TOPIC = "news"


class Subscriber(threading.Thread):
    """One SDK subscription stream; collects the messages."""

    def __init__(self, node: Node) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.ready = threading.Event()
        self.got: list[dict[str, Any]] = []

    def run(self) -> None:
        try:
            for item in Colony.for_home(self.node.home).topic_subscribe(TOPIC):
                if item.get("subscribed"):
                    self.ready.set()
                else:
                    self.got.append(item)
        except Exception:  # the daemon was killed: the stream ends
            return

    def data(self) -> list[str]:
        return [m["data"] for m in self.got]


def _forge(payload: bytes) -> bytes:
    """The same signed message with its data changed after signing."""
    env_w, chain = cbor_decode(payload)
    env = Envelope.from_wire(env_w)
    body = cbor_decode(env.body)
    body["d"] = b"forged"
    return cbor_encode([Envelope(MESSAGE_KIND, cbor_encode(body), env.signer,
                                 env.signature).to_wire(), chain])


async def _attack(target: Node) -> None:
    """Post a forged and an unsigned message to `target` on the topics protocol."""
    key = KeyPair.generate()
    tid = topic_id(TOPIC)
    genuine = seal_payload(key, (), TOPIC, 1, 1, time.time(), b"genuine")
    unsigned = cbor_encode([["colony-topic-msg", b"\xa0", key.public.raw, bytes(64)], []])
    async with Transport.open(KeyPair.generate(), ["/ip4/127.0.0.1/tcp/0"]) as t:
        t.codec_for(PROTO_TOPICS, Codec.CBOR)
        peer = await t.connect(target.addr)
        for payload in (_forge(genuine), unsigned):
            t.post(peer, PROTO_TOPICS, Gossip(tid, message_id(payload), 0, payload).to_wire())
        await trio.sleep(1.0)  # let the frames go out before the transport closes


def _drops(node: Node) -> dict[str, int]:
    drops: dict[str, int] = node.api().call("GET", "/v1/stats")["drops"]
    return drops


def test_messages_reach_every_subscriber_once_forgeries_refused_and_a_kill_survived(
        tmp_path: Path) -> None:
    with Cluster(tmp_path, N) as c:
        c.wait_converged(timeout=30)
        subs = [Subscriber(n) for n in c.nodes[1:]]
        for s in subs:
            s.start()
        for s in subs:
            assert s.ready.wait(20), f"{s.node.home.name} did not subscribe"
        pub = Colony.for_home(c.nodes[0].home)
        first = [f"m{k}" for k in range(10)]
        for text in first:
            pub.topic_publish(TOPIC, text)
        wait_for(lambda: all(len(s.got) >= len(first) for s in subs), 15,
                 "every subscriber to get the first messages")
        for s in subs:
            assert s.data() == first, s.node.home.name  # once each, in order
            assert [m["seq"] for m in s.got] == list(range(1, 11))
            assert {m["publisher"] for m in s.got} == {c.nodes[0].peer_id}

        trio.run(_attack, c.nodes[4])
        wait_for(lambda: _drops(c.nodes[4])["topics.refused.forged"] >= 2, 10,
                 "the forged and the unsigned message to be refused")

        c.nodes[8].kill()  # SIGKILL: its neighbours see the connections close
        left = subs[:-1]
        later = [f"after-kill {k}" for k in range(10)]
        for text in later:
            pub.topic_publish(TOPIC, text)
            time.sleep(0.05)
        wait_for(lambda: all(len(s.got) >= len(first) + len(later) for s in left), 15,
                 "the 7 subscribers left to get the later messages")
        for s in left:
            assert s.data() == first + later, s.node.home.name
            assert all(m["gap"] == 0 for m in s.got)
        # The CLI: `colony topic pub` and `colony topic ls --json` on node 0.
        colony_cmd(c.nodes[0].home, "topic", "pub", TOPIC, "via the cli")
        wait_for(lambda: all(s.data()[-1:] == ["via the cli"] for s in left), 15,
                 "the CLI's message")
        rows = {r["topic"]: r for r in json.loads(
            colony_cmd(c.nodes[0].home, "topic", "ls", "--json").stdout)}
        assert rows[TOPIC]["published"] == 21 and c.nodes[8].peer_id not in rows[TOPIC]["active"]
        assert all(len(s.got) == 21 for s in left)  # exactly once, nothing more
