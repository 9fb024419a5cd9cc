"""multistream-select 1.0 (libp2p connections spec, "Protocol negotiation").

Each message is `unsigned-varint(len) ‖ utf-8 text ‖ "\\n"`. Both sides first send
the header `/multistream/1.0.0`; the dialer then proposes one protocol at a time;
the listener echoes the one it accepts or answers `na`.

The dialer here pipelines: header and first proposal go out in one write, so a
successful negotiation costs one round trip (what go- and js-libp2p do too). The
I/O object is anything with `async read_exact(n)` and `async write(data)`: a raw
TCP stream before security, the Noise channel before Yamux, or a Yamux stream.
No trio import: the coroutines only await the I/O object.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from overlay.core.multiformats import encode_varint
from overlay.p2p.errors import NegotiationError

HEADER = "/multistream/1.0.0"
NA = "na"
#: Longest message we accept (the spec recommends protocol ids well below this).
MAX_MESSAGE_BYTES = 1024
#: Proposals we answer `na` before giving up on a dialer that keeps guessing.
MAX_PROPOSALS = 32


class ByteIO(Protocol):
    async def read_exact(self, n: int) -> bytes: ...
    async def write(self, data: bytes) -> None: ...


def encode(text: str) -> bytes:
    line = text.encode() + b"\n"
    if len(line) > MAX_MESSAGE_BYTES:
        raise NegotiationError(f"protocol id {text[:60]!r}… is too long")
    return encode_varint(len(line)) + line


async def read_message(io: ByteIO) -> str:
    """One message, without its newline. NegotiationError if malformed."""
    length = 0
    for shift in range(0, 21, 7):  # a length below 2**21 fits in 3 bytes
        b = (await io.read_exact(1))[0]
        length |= (b & 0x7F) << shift
        if not b & 0x80:
            break
    else:
        raise NegotiationError("multistream length prefix too long")
    if length == 0 or length > MAX_MESSAGE_BYTES:
        raise NegotiationError(f"multistream message of {length} bytes")
    line = await io.read_exact(length)
    if not line.endswith(b"\n"):
        raise NegotiationError("multistream message does not end in a newline")
    try:
        return line[:-1].decode()
    except UnicodeDecodeError:
        raise NegotiationError("multistream message is not UTF-8") from None


async def select_dialer(io: ByteIO, protocols: Iterable[str]) -> str:
    """Propose `protocols` in order; return the first the listener accepts."""
    wanted = list(protocols)
    if not wanted:
        raise ValueError("no protocol to propose")
    await io.write(encode(HEADER) + encode(wanted[0]))
    header = await read_message(io)
    if header != HEADER:
        raise NegotiationError(f"peer speaks {header[:60]!r}, not {HEADER}")
    for i, proto in enumerate(wanted):
        if i:
            await io.write(encode(proto))
        answer = await read_message(io)
        if answer == proto:
            return proto
        if answer != NA:
            raise NegotiationError(f"peer answered {answer[:60]!r} to {proto!r}")
    raise NegotiationError(f"peer supports none of {wanted}")


async def select_listener(io: ByteIO, supported: Iterable[str]) -> str:
    """Answer a dialer's proposals; return the protocol agreed on."""
    accept = set(supported)
    await io.write(encode(HEADER))
    header = await read_message(io)
    if header != HEADER:
        raise NegotiationError(f"peer speaks {header[:60]!r}, not {HEADER}")
    for _ in range(MAX_PROPOSALS):
        proto = await read_message(io)
        if proto in accept:
            await io.write(encode(proto))
            return proto
        await io.write(encode(NA))  # includes `ls`: we do not list protocols
    raise NegotiationError(f"peer proposed {MAX_PROPOSALS} protocols we do not speak")
