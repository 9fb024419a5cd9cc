"""What the transport adapter needs from a network stack, and its two stacks.

`Transport` (overlay/runtime/net/transport.py) keeps Colony's stream discipline —
framing, queues, request ids, bounds — and talks to a `Backend` for everything
libp2p: listening, dialling, opening and accepting negotiated streams, identify,
ping. Two backends exist:

* `native` — overlay.p2p (our own multistream-select, Noise XX, Yamux):
  overlay/runtime/net/backend_native.py. The default.
* `py-libp2p` — py-libp2p 0.8.1's host: overlay/runtime/net/backend_pylibp2p.py,
  the only module that imports libp2p; imported lazily, only when chosen.

`make_backend` (the choice between them) lives in overlay/runtime/net/transport.py, so
the backends can import this module without an import cycle.

Streams of either backend present `BackendStream`: `read` returns bytes or a
read-only memoryview (the native stack hands out views of decrypted messages),
b"" at EOF, and
raises overlay.p2p.errors.StreamResetError on reset, StreamError on other
failures; `write` raises StreamError.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import trio

from overlay.core.ids import PeerId
from overlay.runtime.net.transport_types import PeerInfo


class BackendStream(Protocol):
    @property
    def gone(self) -> bool:
        """True once the stream can carry nothing more (reset, connection closed),
        where the stack knows it before a write; False when unknown."""
        ...

    async def read(self, max_bytes: int) -> bytes | memoryview: ...
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...
    async def reset(self) -> None: ...


StreamHandler = Callable[[BackendStream, PeerId], Awaitable[None]]
PeerCallback = Callable[[PeerId], None]


class Backend(Protocol):
    on_connected: PeerCallback | None
    on_disconnected: PeerCallback | None

    @property
    def listen_addrs(self) -> list[str]: ...

    def serve(self, listen_addrs: Iterable[str]) -> AbstractAsyncContextManager[None]:
        """Listen (ListenError if an address fails) and run until the block exits."""
        ...

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None: ...
    async def new_stream(self, peer: PeerId, protocol: str) -> BackendStream: ...
    def is_connected(self, peer: PeerId) -> bool: ...
    def connection_drops(self) -> dict[str, int]:
        """Connections refused or dropped for their peer's fault, by reason."""
        ...
    def connected_peers(self) -> list[PeerId]: ...
    def remote_addr(self, peer: PeerId) -> tuple[str, int] | None:
        """(ip, port) of `peer`'s end of our newest open TCP connection, if any."""
        ...
    async def dial(self, peer: PeerId, addrs: list[str]) -> None: ...
    async def disconnect(self, peer: PeerId) -> None: ...
    async def identify(self, peer: PeerId) -> PeerInfo: ...
    async def ping(self, peer: PeerId, count: int) -> list[float]: ...
    async def attach_stream(
        self, stream: trio.abc.Stream, *, initiator: bool, peer: PeerId | None
    ) -> PeerId: ...

