"""Negotiating the Noise suite over real sockets (`upgrade(..., suites=...)`): the
dialer offers AES-GCM first and falls back to libp2p's `/noise` when the listener
does not take it; both ends record the suite; Yamux streams work over either; a
hostile message after the handshake closes only that connection, with its reason."""

from __future__ import annotations

import pytest
import trio

from overlay.core.crypto import KeyPair
from overlay.p2p import multistream, noise
from overlay.p2p.connection import Connection, P2PStream, upgrade
from overlay.p2p.errors import HandshakeError, NegotiationError
from overlay.p2p.noise_cipher import AESGCM_SUITE, CHACHA

pytestmark = pytest.mark.timeout(30)
BOTH = (AESGCM_SUITE, CHACHA)
ECHO = "/echo/1"


async def _echo(s: P2PStream) -> None:
    s.protocol = await multistream.select_listener(s, [ECHO])
    while data := await s.read():
        await s.write(bytes(data))
    await s.close()


async def _pair(
    dialer: tuple[noise.NoiseSuite, ...], listener: tuple[noise.NoiseSuite, ...],
    nursery: trio.Nursery,
) -> tuple[Connection, Connection]:
    kp_a, kp_b = KeyPair.generate(), KeyPair.generate()
    sa, sb = trio.socket.socketpair()
    left, right = trio.SocketStream(sa), trio.SocketStream(sb)
    got: list[Connection] = []

    async def respond() -> None:
        got.append(await upgrade(right, kp_b, initiator=False, suites=listener))

    async with trio.open_nursery() as n:
        n.start_soon(respond)
        a = await upgrade(left, kp_a, initiator=True, expected_peer=kp_b.peer_id,
                          suites=dialer)
    b = got[0]
    await nursery.start(a.run, _echo)
    await nursery.start(b.run, _echo)
    return a, b


async def _roundtrip(a: Connection) -> None:
    s = await a.open_stream([ECHO])
    big = bytes(range(256)) * 4096  # 1 MiB: many Noise messages, Yamux window updates
    got = bytearray()

    async def read_all() -> None:
        while len(got) < len(big):
            chunk = await s.read()
            assert chunk
            got.extend(chunk)

    async with trio.open_nursery() as n:
        n.start_soon(read_all)
        await s.write(big)
    assert bytes(got) == big
    await s.close()


@pytest.mark.parametrize(("dialer", "listener", "chosen"), [
    (BOTH, BOTH, AESGCM_SUITE),  # colony peers where AES is fast
    (BOTH, (CHACHA,), CHACHA),  # a listener set to chacha (or a js/go/rust peer)
    ((CHACHA,), BOTH, CHACHA),  # a dialer set to chacha
    ((CHACHA,), (CHACHA,), CHACHA),  # plain libp2p, as before
    ((AESGCM_SUITE,), BOTH, AESGCM_SUITE),
])
def test_the_first_suite_both_speak_is_chosen_and_carries_streams(
        dialer: tuple[noise.NoiseSuite, ...], listener: tuple[noise.NoiseSuite, ...],
        chosen: noise.NoiseSuite) -> None:
    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                a, b = await _pair(dialer, listener, n)
                assert a.security == b.security == chosen.protocol_id
                assert type(a.ciphers.send) is chosen.cipher
                assert type(b.ciphers.recv) is chosen.cipher
                await _roundtrip(a)
                await _roundtrip(b)  # the listener's own stream, the other way
                n.cancel_scope.cancel()

    trio.run(main)


def test_no_common_suite_fails_the_handshake() -> None:
    async def main() -> None:
        with trio.fail_after(20):
            kp_a, kp_b = KeyPair.generate(), KeyPair.generate()
            sa, sb = trio.socket.socketpair()
            left, right = trio.SocketStream(sa), trio.SocketStream(sb)
            errors: list[Exception] = []

            async def respond() -> None:
                try:
                    await upgrade(right, kp_b, initiator=False, suites=(CHACHA,), timeout_s=5)
                except (NegotiationError, HandshakeError, trio.TooSlowError) as e:
                    errors.append(e)
                await right.aclose()

            async with trio.open_nursery() as n:
                n.start_soon(respond)
                with pytest.raises(NegotiationError, match="supports none"):
                    await upgrade(left, kp_a, initiator=True, expected_peer=kp_b.peer_id,
                                  suites=(AESGCM_SUITE,))
                await left.aclose()
            assert len(errors) == 1

    trio.run(main)


def test_a_bad_tag_after_an_aesgcm_handshake_drops_only_that_connection() -> None:
    """A message that fails AES-GCM authentication (a flipped tag bit) ends the
    connection with DecryptError as its recorded protocol error; nothing escapes."""
    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                a, b = await _pair(BOTH, BOTH, n)
                assert a.security == AESGCM_SUITE.protocol_id
                wire = bytearray(noise.encrypt_frames(a.ciphers.send, b"\x00" * 12))
                wire[-1] ^= 0x01
                await a.stream.send_all(bytes(wire))
                while not b.closed:
                    await trio.sleep(0.01)
                assert b.protocol_error is not None
                assert b.protocol_error.startswith("DecryptError")
                # A fresh connection between the same keys' peers still works.
                c, _ = await _pair(BOTH, BOTH, n)
                await _roundtrip(c)
                n.cancel_scope.cancel()

    trio.run(main)
