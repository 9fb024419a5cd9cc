"""Chains of topic neighbours in other cells (services/topic_chains.py), on real
transports in this process and real colony homes (`colony colony create`, `cert
issue`, `join`): two members that never gossiped (as in two cells) know nothing of
each other's chain; the first topic frame from one to the other waits for the chain
exchange, so the receiver already holds the sender's role when it arrives; an outsider
(no certificate of this colony) is refused and counted on both sides."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import pytest
import trio

from overlay.cli.main import main as colony_main
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.net.transport import Codec, Transport
from overlay.runtime.process.identity import KEY_FILE, load_identity
from overlay.runtime.services.topic_chains import ChainExchange
from overlay.runtime.services.topics import PROTO_TOPICS
from overlay.runtime.services.trust_state import Trust

pytestmark = pytest.mark.timeout(60)


def _cli(home: Path, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert colony_main(["--home", str(home), *args]) == 0, args
    return out.getvalue()


def _colony(tmp: Path) -> list[tuple[Path, KeyPair]]:
    """A founder and two members (role member only)."""
    homes = [tmp / n for n in ("founder", "a", "b")]
    for h in homes:
        _cli(h, "init")
    founder = load_identity(homes[0] / KEY_FILE)
    _cli(homes[0], "colony", "create", "lab")
    for h in homes[1:]:
        kp = load_identity(h / KEY_FILE)
        tok = h.parent / f"{h.name}.token"
        _cli(homes[0], "cert", "issue", str(kp.peer_id), "--roles", "member", "--expires",
             "1d", "--bootstrap", f"/ip4/127.0.0.1/tcp/1/p2p/{founder.peer_id}",
             "--out", str(tok))
        _cli(h, "join", str(tok))
    return [(h, load_identity(h / KEY_FILE)) for h in homes]


def test_first_frame_waits_for_the_chain_exchange_and_outsiders_are_refused(
        tmp_path: Path) -> None:
    (_, _), (home_a, key_a), (home_b, key_b) = _colony(tmp_path)
    trust_a, trust_b = Trust(home_a), Trust(home_b)
    now = time.time()
    assert trust_b.check(key_a.peer_id, "member", now) is not None  # never gossiped
    assert trust_a.check(key_b.peer_id, "member", now) is not None
    # What b's topic service does with a frame: take it only from a role holder.
    taken: list[tuple[PeerId, object, str | None]] = []

    async def main() -> None:
        listen = ["/ip4/127.0.0.1/tcp/0"]
        async with Transport.open(key_a, listen) as ta, Transport.open(key_b, listen) as tb, \
                Transport.open(KeyPair.generate(), listen) as tout, trio.open_nursery() as n:
            def on_frame(peer: PeerId, obj: object) -> None:
                taken.append((peer, obj, trust_b.check(peer, "member", time.time())))

            tb.set_handler(PROTO_TOPICS, on_message=on_frame, codec=Codec.CBOR)
            ta.codec_for(PROTO_TOPICS, Codec.CBOR)

            def send_a(p: PeerId, f: object) -> None:
                ta.post(p, PROTO_TOPICS, f)

            def send_b(p: PeerId, f: object) -> None:
                tb.post(p, PROTO_TOPICS, f)

            ca = ChainExchange(trust_a, ta, send_a)
            cb = ChainExchange(trust_b, tb, send_b)
            ca.register()
            cb.register()
            n.start_soon(ca.run)
            n.start_soon(cb.run)
            await trio.sleep(0.05)
            ta.add_addrs(key_b.peer_id, tb.addrs)
            for i in range(3):  # held until the exchange is done, then posted in order
                ca.send(key_b.peer_id, {"frame": i})
            with trio.fail_after(10):
                while len(taken) < 3:
                    await trio.sleep(0.02)
            assert ca.stats.exchanged == 1 and cb.stats.served == 1
            # A later frame goes straight out: a's chain of b is known now.
            ca.send(key_b.peer_id, {"frame": 3})
            with trio.fail_after(10):
                while len(taken) < 4:
                    await trio.sleep(0.02)
            assert ca.stats.exchanged == 1
            # An outsider with no certificate of this colony: refused, counted.
            empty = tmp_path / "outsider"
            _cli(empty, "init")
            co = ChainExchange(Trust(empty), tout, lambda p, f: None)
            tout.add_addrs(key_b.peer_id, tb.addrs)
            assert await co.exchange(key_b.peer_id) is False  # open mode: learns nothing
            assert cb.stats.refused == 1
            n.cancel_scope.cancel()

    trio.run(main)
    assert [obj for _, obj, _ in taken] == [{"frame": i} for i in range(4)]
    assert all(peer == key_a.peer_id and why is None for peer, _, why in taken), taken
    assert trust_a.check(key_b.peer_id, "member", time.time()) is None  # both ways
