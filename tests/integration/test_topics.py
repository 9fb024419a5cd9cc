"""Topics on real daemons: 8 `colony daemon` processes on 127.0.0.1, then a colony of 3.

Node 0 publishes; nodes 1–7 subscribe through the SDK (one NDJSON stream each). Every
message must reach every subscriber exactly once, in order. A peer outside the swarm
(a Transport in this process with its own key) then posts a forged message (data
changed after signing) and an unsigned one straight to node 4: both are refused,
counted in /v1/stats drops, delivered nowhere. Then node 7 is killed (SIGKILL): the
messages published after it (and one by `colony topic pub`) reach the 6 subscribers
left.

In colony mode (3 daemons: the owner's node, one with member+submit, one with member
only): a message of the submit holder, carrying its certificate chain, reaches the
other two; the member-only node's publish is refused with 403 by its own daemon; a
peer outside the colony is not taken as a neighbour (its frames are dropped, counted).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import Cluster, Node, wait_for

from gossip.plumtree import message_id
from gossip.topic_messages import Gossip
from gossip.topic_signed import MESSAGE_KIND, seal_payload, topic_id
from overlay.cli.main import main as colony_main
from overlay.client import Colony
from overlay.client.errors import Forbidden
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.wire import cbor_decode, cbor_encode
from overlay.runtime.net.transport import Codec, Transport
from overlay.runtime.services.topics import PROTO_TOPICS

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

N = 8
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


async def _attack(target: Node, colony: bytes | None = None) -> None:
    """Post a forged and an unsigned message to `target` on the topics protocol."""
    key = KeyPair.generate()
    tid = topic_id(TOPIC, colony)
    genuine = seal_payload(key, (), TOPIC, 1, 1, time.time(), b"genuine")
    unsigned = cbor_encode([["colony-topic-msg", b"\xa0", key.public.raw, bytes(64)], []])
    async with Transport.open(KeyPair.generate(), ["/ip4/127.0.0.1/tcp/0"]) as t:
        t.codec_for(PROTO_TOPICS, Codec.CBOR)
        peer = await t.connect(target.addr)
        for payload in (_forge(genuine), unsigned):
            t.post(peer, PROTO_TOPICS, Gossip(tid, message_id(payload), 0, payload).to_wire())
        await trio.sleep(0.3)  # let the frames go out before the transport closes


def _cli(home: Path, *args: str) -> str:
    """A `colony` command in-process (a subprocess costs ~1.3 s of imports); stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert colony_main(["--home", str(home), *args]) == 0, args
    return out.getvalue()


def _drops(node: Node) -> dict[str, int]:
    drops: dict[str, int] = node.api().call("GET", "/v1/stats")["drops"]
    return drops


def test_messages_reach_every_subscriber_once_forgeries_refused_and_a_kill_survived(
        tmp_path: Path) -> None:
    with Cluster(tmp_path, N) as c:
        # Two push-pull intervals (30 s lan): a joiner that missed another's alive
        # gossip (its retransmits used up while it was starting, on a loaded machine)
        # learns of it at its next push-pull. 30 s timed out once beside a full suite.
        c.wait_converged(timeout=60)
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

        c.nodes[N - 1].kill()  # SIGKILL: its neighbours see the connections close
        left = subs[:-1]
        later = [f"after-kill {k}" for k in range(10)]
        for text in later:
            pub.topic_publish(TOPIC, text)
            time.sleep(0.05)
        wait_for(lambda: all(len(s.got) >= len(first) + len(later) for s in left), 15,
                 "the subscribers left to get the later messages")
        for s in left:
            assert s.data() == first + later, s.node.home.name
            assert all(m["gap"] == 0 for m in s.got)
        # The CLI (in-process: a subprocess costs ~1.3 s of imports): `colony topic
        # pub` and `colony topic ls --json` on node 0.
        _cli(c.nodes[0].home, "topic", "pub", TOPIC, "via the cli")
        wait_for(lambda: all(s.data()[-1:] == ["via the cli"] for s in left), 15,
                 "the CLI's message")
        rows = {r["topic"]: r
                for r in json.loads(_cli(c.nodes[0].home, "topic", "ls", "--json"))}
        row = rows[TOPIC]
        assert row["published"] == 21 and c.nodes[N - 1].peer_id not in row["active"]
        assert all(len(s.got) == 21 for s in left)  # exactly once, nothing more


def test_colony_roles_decide_who_publishes_and_who_is_a_neighbour(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "c", 3)
    try:
        c.prepare()
        n0, n1, n2 = c.nodes
        _cli(n0.home, "colony", "create", "lab")  # n0: every role
        for node, roles in ((n1, "member,submit"), (n2, "member")):
            tok = node.home.parent / f"{node.home.name}.token"
            _cli(n0.home, "cert", "issue", node.peer_id, "--roles", roles,
                 "--bootstrap", n0.addr, "--out", str(tok))
            _cli(node.home, "join", str(tok))
        c.launch()
        c.wait_converged(timeout=30)
        subs = [Subscriber(n) for n in (n0, n2)]
        for s in subs:
            s.start()
        for s in subs:
            assert s.ready.wait(20), f"{s.node.home.name} did not subscribe"
        Colony.for_home(n1.home).topic_publish(TOPIC, "from the submit holder")
        wait_for(lambda: all(s.data() == ["from the submit holder"] for s in subs), 15,
                 "the submit holder's message on both subscribers")
        with pytest.raises(Forbidden, match="role submit"):
            Colony.for_home(n2.home).topic_publish(TOPIC, "member only")
        owner = bytes.fromhex(json.loads((n0.home / "trust" / "colony.json").read_text())
                              ["colony"])
        trio.run(_attack, n0, owner)  # an outsider: no certificate known for it
        wait_for(lambda: _drops(n0)["topics.frames_unauthorized"] >= 2, 10,
                 "the outsider's frames to be dropped")
        assert _drops(n0)["topics.refused.forged"] == 0  # dropped before any check
        assert all(s.data() == ["from the submit holder"] for s in subs)
    finally:
        c.close()
