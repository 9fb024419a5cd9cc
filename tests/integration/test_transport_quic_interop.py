"""Our QUIC (overlay.p2p.quic) against another libp2p implementation's: py-libp2p
0.8.1's QUIC transport (aioquic underneath too, but its own libp2p TLS certificate
code), both directions on 127.0.0.1: each side verifies the other's certificate
extension, multistream-select picks the protocol, bytes echo."""

from __future__ import annotations

import pytest
import trio

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.p2p.host import AnyStream, Host

libp2p = pytest.importorskip("libp2p")
multiaddr = pytest.importorskip("multiaddr")

pytestmark = [pytest.mark.timeout(60)]

ECHO = "/colony/test-echo/1.0.0"
QUIC = "/ip4/127.0.0.1/udp/0/quic-v1"


def _py_host() -> object:
    from libp2p.crypto.ed25519 import create_new_key_pair

    return libp2p.new_host(key_pair=create_new_key_pair(),
                           listen_addrs=[multiaddr.Multiaddr(QUIC)], enable_quic=True)


def test_we_dial_py_libp2p_over_quic() -> None:
    async def main() -> None:
        h = _py_host()

        async def echo(stream: object) -> None:
            data = await stream.read(100_000)  # type: ignore[attr-defined]
            await stream.write(data)  # type: ignore[attr-defined]
            await stream.close()  # type: ignore[attr-defined]

        h.set_stream_handler(ECHO, echo)  # type: ignore[attr-defined]
        async with h.run([multiaddr.Multiaddr(QUIC)]):  # type: ignore[attr-defined]
            addrs = [str(a).split("/p2p/")[0] for a in h.get_addrs()]  # type: ignore[attr-defined]
            pid = PeerId.from_bytes(h.get_id().to_bytes())  # type: ignore[attr-defined]
            ours = Host(KeyPair.generate())
            async with ours.serve([]):
                with trio.fail_after(20):
                    conn = await ours.dial(pid, addrs)
                    assert conn.remote_peer == pid and conn.remote_addr is not None \
                        and conn.remote_addr.endswith("/quic-v1")
                    s = await ours.new_stream(pid, [ECHO])
                    await s.write(b"interop!")
                    await s.close()
                    assert await s.read() == b"interop!"

    trio.run(main)


def test_py_libp2p_dials_us_over_quic() -> None:
    from libp2p.peer.peerinfo import info_from_p2p_addr

    async def main() -> None:
        ours = Host(KeyPair.generate())

        async def echo(s: AnyStream) -> None:
            while data := await s.read():
                await s.write(data)
            await s.close()

        ours.set_stream_handler(ECHO, echo)
        async with ours.serve([QUIC]):
            addr = f"{ours.listen_addrs[0]}/p2p/{ours.peer_id}"
            h = _py_host()
            async with h.run([multiaddr.Multiaddr(QUIC)]):  # type: ignore[attr-defined]
                with trio.fail_after(20):
                    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
                    await h.connect(info)  # type: ignore[attr-defined]
                    s = await h.new_stream(info.peer_id, [ECHO])  # type: ignore[attr-defined]
                    await s.write(b"from py-libp2p")
                    await s.close()
                    assert await s.read(100) == b"from py-libp2p"
                    theirs = h.get_id().to_bytes()  # type: ignore[attr-defined]
                    assert PeerId.from_bytes(theirs) in ours.connected_peers()

    trio.run(main)
