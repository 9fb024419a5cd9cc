"""The libp2p identify message (`/ipfs/id/1.0.0`), encoded and decoded by hand.

    message Identify {
      optional string protocolVersion = 5;  optional string agentVersion = 6;
      optional bytes publicKey = 1;         repeated bytes listenAddrs = 2;
      optional bytes observedAddr = 4;      repeated string protocols = 3;
      optional bytes signedPeerRecord = 8;  }

The listener writes one varint-length-prefixed message and closes the stream.
`observedAddr` is the address we see the peer connect from: it tells a node
behind NAT what the outside world sees (the edge profile's reachability check
reads `IdentifyInfo.observed_addr`). Addresses we cannot parse are skipped, not
fatal: peers advertise transports we do not speak.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

from overlay.core.errors import MalformedFrame
from overlay.core.ids import PeerId
from overlay.p2p import keys, multiaddr, pb
from overlay.p2p.errors import ProtobufError

PROTOCOL_ID = "/ipfs/id/1.0.0"
PROTOCOL_VERSION = "ipfs/0.1.0"
#: Identify messages larger than this are refused (go-libp2p uses 4 KiB… 2 MiB).
MAX_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class IdentifyInfo:
    peer: PeerId | None  # from publicKey, when present and valid
    protocols: tuple[str, ...]
    agent_version: str | None
    protocol_version: str | None
    listen_addrs: tuple[str, ...]
    observed_addr: str | None


def encode(
    public_key: bytes,
    listen_addrs: list[str],
    protocols: list[str],
    observed_addr: str | None,
    agent_version: str,
) -> bytes:
    out = bytearray(pb.field_bytes(5, PROTOCOL_VERSION.encode()))
    out += pb.field_bytes(6, agent_version.encode())
    out += pb.field_bytes(1, keys.encode_public_key(public_key))
    for a in listen_addrs:
        with suppress(MalformedFrame):
            out += pb.field_bytes(2, multiaddr.to_bytes(a))
    if observed_addr is not None:
        with suppress(MalformedFrame):
            out += pb.field_bytes(4, multiaddr.to_bytes(observed_addr))
    for p in protocols:
        out += pb.field_bytes(3, p.encode())
    return bytes(out)


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ProtobufError("identify text field is not UTF-8") from None


def decode(data: bytes) -> IdentifyInfo:
    fields = pb.decode(data)
    peer: PeerId | None = None
    key = pb.get_bytes(fields, 1)
    if key is not None:
        with suppress(Exception):
            peer = keys.peer_id_of(keys.decode_public_key(key))
    addrs: list[str] = []
    for raw in pb.get_all_bytes(fields, 2):
        with suppress(MalformedFrame):
            addrs.append(multiaddr.from_bytes(raw))
    observed: str | None = None
    raw_obs = pb.get_bytes(fields, 4)
    if raw_obs is not None:
        with suppress(MalformedFrame):
            observed = multiaddr.from_bytes(raw_obs)
    protocols = tuple(t for t in (_text(p) for p in pb.get_all_bytes(fields, 3)) if t)
    return IdentifyInfo(
        peer,
        protocols,
        _text(pb.get_bytes(fields, 6)),
        _text(pb.get_bytes(fields, 5)),
        tuple(addrs),
        observed,
    )
