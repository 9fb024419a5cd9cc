"""Run the secure + muxed libp2p stack over any trio byte stream (issue #10).

A WebRTC data channel (overlay.runtime.webrtc_bridge) or a relayed circuit
(overlay.runtime.relay) is a plain `trio.abc.Stream`. `attach_stream` makes it a
libp2p connection of the daemon's transport: multistream-select of Noise, the Noise
XX handshake (which authenticates the remote peer id, so a relay in the middle sees
only ciphertext and cannot impersonate either end), multistream-select of Yamux,
then the connection joins the host's swarm. From then on every overlay protocol
(gossip, kad, bitswap, capsules, identify, ping) runs over it exactly as over TCP:
`Transport.post/request/...` find the connection and never dial.

When the transport offers its own `attach_stream` (the native libp2p stack,
overlay/p2p), that is used. Otherwise this module drives py-libp2p 0.8.1's own
upgrader, the way its circuit-relay transport does: `upgrader.upgrade_security`,
`upgrader.upgrade_connection`, `swarm.add_conn`. That reaches into the adapter's
host (`Transport._network`): the one place outside transport.py that touches
py-libp2p, kept here so it can go when the native stack replaces it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import trio

from overlay.core.ids import PeerId


class AttachError(Exception):
    """The secure/muxed upgrade over a stream failed (handshake, wrong peer, timeout)."""


class _StreamIO:
    """py-libp2p's ReadWriteCloser over a trio Stream (as its TrioTCPStream)."""

    def __init__(self, stream: trio.abc.Stream, remote: tuple[str, int] | None) -> None:
        self.stream = stream
        self._remote = remote
        self._read_lock = trio.Lock()
        self._write_lock = trio.Lock()

    async def write(self, data: bytes) -> None:
        from libp2p.io.exceptions import ConnectionClosedError

        async with self._write_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise ConnectionClosedError(f"stream closed: {e}", transport="colony-stream") from e

    async def read(self, n: int | None = None) -> bytes:
        async with self._read_lock:
            if n == 0:
                return b""
            try:
                return await self.stream.receive_some(n)
            except trio.ClosedResourceError:
                return b""
            except trio.BrokenResourceError as e:
                from libp2p.io.exceptions import ConnectionClosedError

                raise ConnectionClosedError(f"stream broken: {e}", transport="colony-stream") from e

    async def close(self) -> None:
        await self.stream.aclose()

    def get_remote_address(self) -> tuple[str, int] | None:
        return self._remote


async def attach_stream(
    transport: Any,
    stream: trio.abc.Stream,
    *,
    initiator: bool,
    peer: PeerId | None = None,
    relayed: bool = False,
    timeout_s: float = 20.0,
) -> PeerId:
    """Upgrade `stream` to a libp2p connection of `transport`; return the remote peer.

    The initiator names the `peer` it expects; Noise proves it (AttachError if the
    other end has another key). The responder learns the peer from the handshake.
    On failure the stream is closed.
    """
    native = getattr(transport, "attach_stream", None)
    if native is not None:
        result: PeerId = await native(stream, initiator=initiator, peer=peer)
        return result
    if initiator and peer is None:
        raise ValueError("the initiator must name the peer it expects")
    from libp2p.connection_types import ConnectionType
    from libp2p.network.connection.raw_connection import RawConnection
    from libp2p.peer.id import ID

    network = transport._network
    raw = RawConnection(
        _StreamIO(stream, None),  # type: ignore[arg-type]
        initiator,
        ConnectionType.RELAYED if relayed else ConnectionType.DIRECT,
    )
    try:
        with trio.fail_after(timeout_s):
            secured = await network.upgrader.upgrade_security(
                raw, initiator, ID(peer.raw) if peer is not None else None
            )
            remote = secured.get_remote_peer()
            muxed = await network.upgrader.upgrade_connection(secured, remote)
            await network.add_conn(muxed, direction="outbound" if initiator else "inbound")
    except BaseException as e:
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(2.0),
            contextlib.suppress(Exception),
        ):
            await stream.aclose()
        if isinstance(e, Exception | trio.TooSlowError):
            raise AttachError(
                f"libp2p upgrade over the stream failed: {type(e).__name__}: {e}"
            ) from None
        raise
    return PeerId(remote.to_bytes())
