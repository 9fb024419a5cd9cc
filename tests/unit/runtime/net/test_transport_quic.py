"""The transport adapter on QUIC only: `/ip4/127.0.0.1/udp/0/quic-v1` as the listen
address, dialling by `…/quic-v1/p2p/<id>`, framed messages, raw streams, identify
and ping, all over overlay.p2p.quic (native backend)."""

from __future__ import annotations

import trio

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.net.transport import Transport, TransportConfig, TransportStream

QUIC = "/ip4/127.0.0.1/udp/0/quic-v1"
ECHO = "/colony/test-echo/1.0.0"


def test_transport_listens_and_dials_on_quic_only() -> None:
    async def echo(peer: PeerId, s: TransportStream) -> None:
        while data := await s.receive_some():
            await s.send_all(data)
        await s.send_eof()

    async def main() -> None:
        cfg = TransportConfig()
        with trio.fail_after(15):
            async with Transport.open(KeyPair.generate(), [QUIC], cfg) as a, \
                    Transport.open(KeyPair.generate(), [QUIC], cfg) as b:
                assert b.listen_addrs[0].endswith("/quic-v1")
                assert "/udp/0/" not in b.listen_addrs[0]
                b.set_stream_handler(ECHO, echo)
                got: list[tuple[PeerId, object]] = []
                b.set_handler("/colony/test-msg/1.0.0",
                              on_message=lambda p, body: got.append((p, body)))
                peer = await a.connect(b.addrs[0])
                assert peer == b.peer_id and a.is_connected(peer)
                s = await a.open_stream(peer, ECHO)
                payload = bytes(range(256)) * 4096
                await s.send_all(payload)
                await s.send_eof()
                back = bytearray()
                while data := await s.receive_some():
                    back += data
                assert bytes(back) == payload
                await a.send(peer, "/colony/test-msg/1.0.0", {"hello": 1})
                while not got:
                    await trio.sleep(0.01)
                assert got == [(a.peer_id, {"hello": 1})]
                info = await a.identify(peer)
                assert any(x.endswith("/quic-v1") for x in info.addrs)
                assert info.observed_addr is not None and "/udp/" in info.observed_addr
                assert len(await a.ping(peer, count=3)) == 3
                assert b.is_connected(a.peer_id)

    trio.run(main)


def test_quic_section_sets_path_mtu_discovery_and_its_ceiling() -> None:
    import pytest

    from overlay.core.errors import ConfigError
    from overlay.p2p.quic import QuicConn
    from overlay.runtime.process.config import DEFAULTS

    with pytest.raises(ConfigError, match="max_datagram_bytes"):
        TransportConfig.from_config({**DEFAULTS, "quic": {"max_datagram_bytes": 70000}})
    sizes: dict[bool, int] = {}

    async def main(pmtud: bool) -> None:
        cfg = TransportConfig.from_config(
            {**DEFAULTS, "quic": {"pmtud": pmtud, "max_datagram_bytes": 4000}})
        with trio.fail_after(30):
            async with Transport.open(KeyPair.generate(), [QUIC], cfg) as a, \
                    Transport.open(KeyPair.generate(), [QUIC], cfg) as b:
                b.set_handler("/colony/test-msg/1.0.0", on_message=lambda p, body: None)
                peer = await a.connect(b.addrs[0])
                for _ in range(20):  # traffic after the handshake carries the probe
                    await a.send(peer, "/colony/test-msg/1.0.0", {"x": b"y" * 50_000})
                conns = a._backend.host.connections(peer)  # type: ignore[attr-defined]
                quic = [c for c in conns if isinstance(c, QuicConn)]
                assert quic
                while pmtud and quic[0].quic.max_datagram_size == 1200:
                    await trio.sleep(0.01)  # the probe's ACK may still be on its way
                sizes[pmtud] = quic[0].quic.max_datagram_size

    trio.run(main, True)
    trio.run(main, False)
    assert sizes == {True: 4000, False: 1200}
