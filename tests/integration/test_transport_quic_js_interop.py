"""Our QUIC (overlay.p2p.quic, aioquic) against an independent libp2p QUIC: js-libp2p
3.x with `@chainsafe/libp2p-quic` 2.1.1, which is rust-libp2p's QUIC (quinn + rustls,
the libp2p TLS certificate extension) through napi — another QUIC stack, another TLS
stack, another certificate code than ours. On 127.0.0.1, both directions: each side
verifies the other's peer id from its certificate, multistream-select picks the
protocol, ping runs, and 4 MiB of random bytes echo byte-identical (compared by
sha256 on the sending side) over one stream, which exercises flow control and
several congestion windows in both stacks.

The js peer is js_relay/relay_peer.mjs with `{"quic": true}` (installed with `npm ci`
from the committed lock into a cache keyed by its hash; skipped with the reason
without node/npm or registry). test_transport_quic_interop.py is the py-libp2p
cousin (aioquic underneath as well).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio
from edge_stack import ECHO
from test_relay_v2_js_interop import _install, js_peer

from overlay.core.crypto import KeyPair
from overlay.p2p.host import AnyStream, Host

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

QUIC = "/ip4/127.0.0.1/udp/0/quic-v1"
BULK = 4 << 20


def test_we_dial_js_libp2p_over_quic_and_echo_4_mib() -> None:
    cache = _install()

    async def main() -> None:
        async with js_peer(cache, quic=True, listen=[QUIC]) as js:
            quic_addrs = [a.split("/p2p/")[0] for a in js.ready["addrs"] if "/quic-v1" in a]
            assert quic_addrs, js.ready
            ours = Host(KeyPair.generate())
            async with ours.serve([]):
                with trio.fail_after(60):
                    conn = await ours.dial(js.peer, quic_addrs)
                    assert conn.remote_peer == js.peer
                    assert (conn.remote_addr or "").endswith("/quic-v1"), conn.remote_addr
                    assert len(await ours.ping(js.peer, count=3)) == 3
                    info = await ours.identify(js.peer)
                    assert "/test/echo/1.0.0" in info.protocols, info.protocols
                    payload = os.urandom(BULK)
                    s = await ours.new_stream(js.peer, [ECHO])
                    back = bytearray()

                    async def send() -> None:
                        view = memoryview(payload)
                        for off in range(0, BULK, 256 << 10):
                            await s.write(bytes(view[off : off + (256 << 10)]))
                        await s.close()

                    async with trio.open_nursery() as n:
                        n.start_soon(send)
                        while chunk := await s.read():
                            back += chunk
                    assert len(back) == BULK
                    assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
                    # the js side sees one QUIC connection from us, not a relayed one
                    seen = await js.call(cmd="connections", peerId=str(ours.peer_id))
                    assert any("/quic-v1/" in c["remoteAddr"]
                               for c in seen["connections"]), seen

    trio.run(main)


@contextmanager
def _our_side_on_failure(ours: Host) -> Iterator[None]:
    """A failure's message gains what our endpoint saw (its counted drops, and each
    connection's handshake state): the js side's error names only its own step."""
    try:
        yield
    except AssertionError as e:
        ep = ours._quic
        seen = "no QUIC endpoint" if ep is None else (
            f"our endpoint's drops {dict(ep.drops)}, connections "
            + str([(c.remote_addr, "verified" if c.verified else "unverified",
                    c.close_reason) for c in ep.connections]))
        raise AssertionError(f"{e}\n{seen}") from e


def test_js_libp2p_dials_us_over_quic_and_echoes_4_mib() -> None:
    cache = _install()

    async def main() -> None:
        ours = Host(KeyPair.generate())

        async def echo(s: AnyStream) -> None:
            while data := await s.read():
                await s.write(data)
            await s.close()

        ours.set_stream_handler(ECHO, echo)
        async with ours.serve([QUIC]), js_peer(cache, quic=True, listen=[QUIC]) as js:
            addr = f"{ours.listen_addrs[0]}/p2p/{ours.peer_id}"
            with trio.fail_after(60), _our_side_on_failure(ours):
                pinged = await js.call(cmd="dial_ping", addr=addr)
                assert pinged["remotePeer"] == str(ours.peer_id)
                assert "/quic-v1" in pinged["conn"]["remoteAddr"], pinged
                assert not pinged["conn"]["limited"]
                echoed = await js.call(cmd="dial_echo", addr=addr, protocol=ECHO, bytes=BULK)
                assert echoed["echoed"] == BULK and echoed["same"], echoed
                assert js.peer in ours.connected_peers()

    trio.run(main)
