"""Run the secure + muxed libp2p stack over any trio byte stream.

A WebRTC data channel (overlay.runtime.edge.webrtc_bridge) or a relayed circuit
(overlay.runtime.edge.relay) is a plain `trio.abc.Stream`. `attach_stream` makes it a
connection of the daemon's transport (`Transport.attach_stream`, on either network
stack): multistream-select of Noise, the Noise XX handshake — which authenticates
the remote peer id, so a relay in the middle sees only ciphertext and cannot
impersonate either end — multistream-select of Yamux, and the connection joins the
transport. From then on every overlay protocol (gossip, kad, Bitswap, capsules,
identify, ping) runs over it exactly as over TCP: `Transport.post/request/...`
find the connection and never dial.

This wrapper only bounds the time and gives the dialer one error type.
"""

from __future__ import annotations

from contextlib import suppress

import trio

from overlay.core.ids import PeerId
from overlay.runtime.net.transport import Transport
from overlay.runtime.net.transport_types import AttachError

__all__ = ["AttachError", "attach_stream"]


async def attach_stream(
    transport: Transport,
    stream: trio.abc.Stream,
    *,
    initiator: bool,
    peer: PeerId | None = None,
    relayed: bool = False,
    timeout_s: float = 20.0,
) -> PeerId:
    """Upgrade `stream` to a libp2p connection of `transport`; return the remote peer.

    The initiator names the `peer` it expects (Noise proves it; AttachError if the
    other end has another key); the responder learns the peer from the handshake.
    On failure or timeout the stream is closed and AttachError raised. `relayed`
    is informational (the dialer records the path itself).
    """
    if initiator and peer is None:
        raise ValueError("the initiator must name the peer it expects")
    try:
        with trio.fail_after(timeout_s):
            remote = await transport.attach_stream(stream, initiator=initiator, peer=peer)
    except AttachError:
        raise
    except (Exception, trio.TooSlowError) as e:
        with trio.CancelScope(shield=True), trio.move_on_after(2.0), suppress(Exception):
            await stream.aclose()
        raise AttachError(f"libp2p upgrade over the stream failed: {type(e).__name__}: {e}") from e
    return remote
