"""Typed errors of the libp2p wire: a misbehaving peer raises only these.

All are `WireError`s (overlay.core.errors), i.e. RemoteProtocolErrors: they cost
the peer its stream or connection, never the daemon (DESIGN §3).
"""

from __future__ import annotations

from overlay.core.errors import WireError


class NegotiationError(WireError):
    """multistream-select failed: bad line, or no protocol in common."""


class HandshakeError(WireError):
    """The Noise handshake or its libp2p payload is invalid (or the peer is not the
    one we dialled)."""


class DecryptError(WireError):
    """A Noise transport message failed authentication: the session is dead."""


class MuxerError(WireError):
    """The peer broke the Yamux protocol; the session is closed with a GoAway."""


class ProtobufError(WireError):
    """A protobuf message from the peer does not parse."""





class StreamError(Exception):
    """A stream can no longer be used (not the peer's fault necessarily)."""


class StreamResetError(StreamError):
    """The peer (or we) reset the stream, or its connection went away."""


class StreamClosedError(StreamError):
    """Writing to a stream we already closed for writing."""


class ConnectionClosedError(StreamError):
    """The connection under the stream is closed."""
