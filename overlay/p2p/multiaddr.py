"""Just enough multiaddr (multiformats/multiaddr) for a TCP libp2p node.

Text ↔ binary for ip4, ip6, tcp, udp, dns, dns4, dns6, p2p and the value-less
protocols we may see in a peer's identify (quic-v1, ws, wss, webrtc-direct,
p2p-circuit, …). Replaces the `multiaddr` package in the native stack (it drags
in a few MiB of imports). Pure: raises MalformedFrame on bad input.
"""

from __future__ import annotations

import ipaddress

from overlay.core.errors import MalformedFrame, TruncatedFrame
from overlay.core.ids import PeerId
from overlay.core.multiformats import b58decode, decode_varint, encode_varint

# name → (code, value kind); kinds: "ip4", "ip6", "port", "text", "p2p", "" (no value).
_PROTOCOLS: dict[str, tuple[int, str]] = {
    "ip4": (4, "ip4"),
    "tcp": (6, "port"),
    "udp": (273, "port"),
    "ip6": (41, "ip6"),
    "dns": (53, "text"),
    "dns4": (54, "text"),
    "dns6": (55, "text"),
    "dnsaddr": (56, "text"),
    "p2p": (421, "p2p"),
    "ipfs": (421, "p2p"),
    "p2p-circuit": (290, ""),
    "ws": (477, ""),
    "wss": (478, ""),
    "quic": (460, ""),
    "quic-v1": (461, ""),
    "webtransport": (465, ""),
    "webrtc-direct": (280, ""),
    "webrtc": (281, ""),
    "tls": (448, ""),
    "noise": (454, ""),
}
_BY_CODE = {code: (name, kind) for name, (code, kind) in _PROTOCOLS.items() if name != "ipfs"}


def _value_to_bytes(kind: str, value: str) -> bytes:
    try:
        if kind == "ip4":
            return ipaddress.IPv4Address(value).packed
        if kind == "ip6":
            return ipaddress.IPv6Address(value).packed
        if kind == "port":
            port = int(value)
            if not 0 <= port <= 65535:
                raise ValueError("port out of range")
            return port.to_bytes(2, "big")
        if kind == "p2p":
            raw = b58decode(value)
            PeerId.from_bytes(raw)
            return encode_varint(len(raw)) + raw
        data = value.encode()
        return encode_varint(len(data)) + data
    except (ValueError, MalformedFrame, TruncatedFrame) as e:
        raise MalformedFrame(f"bad multiaddr value {value!r}: {e}") from None


def to_bytes(text: str) -> bytes:
    """`/ip4/1.2.3.4/tcp/4001` → binary multiaddr."""
    parts = text.split("/")
    if not text.startswith("/") or len(parts) < 2:
        raise MalformedFrame(f"multiaddr {text!r} must start with /")
    out = bytearray()
    i = 1
    while i < len(parts):
        name = parts[i]
        if name == "" and i == len(parts) - 1:
            break  # trailing slash
        if name not in _PROTOCOLS:
            raise MalformedFrame(f"multiaddr protocol {name!r} is not supported")
        code, kind = _PROTOCOLS[name]
        out += encode_varint(code)
        i += 1
        if kind:
            if i >= len(parts):
                raise MalformedFrame(f"multiaddr {text!r}: /{name} needs a value")
            out += _value_to_bytes(kind, parts[i])
            i += 1
    return bytes(out)


def from_bytes(data: bytes) -> str:
    """Binary multiaddr → text; MalformedFrame on unknown codes or truncation."""
    buf = memoryview(data)
    out: list[str] = []
    i = 0
    try:
        while i < len(buf):
            code, i = decode_varint(buf, i)
            if code not in _BY_CODE:
                raise MalformedFrame(f"multiaddr code {code} is not supported")
            name, kind = _BY_CODE[code]
            out.append(name)
            if kind in ("ip4", "ip6", "port"):
                width = {"ip4": 4, "ip6": 16, "port": 2}[kind]
                if i + width > len(buf):
                    raise MalformedFrame("multiaddr value truncated")
                raw = bytes(buf[i : i + width])
                i += width
                if kind == "ip4":
                    out.append(str(ipaddress.IPv4Address(raw)))
                elif kind == "ip6":
                    out.append(str(ipaddress.IPv6Address(raw)))
                else:
                    out.append(str(int.from_bytes(raw, "big")))
            elif kind:
                length, i = decode_varint(buf, i)
                if i + length > len(buf):
                    raise MalformedFrame("multiaddr value truncated")
                raw = bytes(buf[i : i + length])
                i += length
                if kind == "p2p":
                    out.append(str(PeerId.from_bytes(raw)))
                else:
                    try:
                        out.append(raw.decode())
                    except UnicodeDecodeError:
                        raise MalformedFrame("multiaddr text value is not UTF-8") from None
    except TruncatedFrame as e:
        raise MalformedFrame(f"multiaddr truncated: {e}") from None
    return "/" + "/".join(out)


def split_p2p(text: str) -> tuple[PeerId | None, str]:
    """`…/p2p/12D3…` → (peer id, the address before it); (None, text) if absent."""
    head, sep, tail = text.rpartition("/p2p/")
    if not sep:
        head, sep, tail = text.rpartition("/ipfs/")
    if not sep:
        return None, text
    if "/" in tail or not tail:
        raise MalformedFrame(f"multiaddr {text!r}: /p2p/ must be the last component")
    try:
        return PeerId.from_base58(tail), head
    except (ValueError, MalformedFrame, TruncatedFrame) as e:
        raise MalformedFrame(f"bad peer id {tail!r}: {e}") from None


def tcp_host_port(text: str) -> tuple[str, int]:
    """(host, port) of `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>`; MalformedFrame if
    the address is not plain TCP."""
    parts = text.split("/")
    if len(parts) != 5 or parts[0] or parts[3] != "tcp":
        raise MalformedFrame(f"{text!r} is not a /<ip|dns>/<host>/tcp/<port> address")
    if parts[1] not in ("ip4", "ip6", "dns", "dns4", "dns6"):
        raise MalformedFrame(f"{text!r}: network protocol {parts[1]!r} is not dialable")
    try:
        port = int(parts[4])
    except ValueError:
        raise MalformedFrame(f"{text!r}: bad port") from None
    if not 0 <= port <= 65535:
        raise MalformedFrame(f"{text!r}: port out of range")
    to_bytes(text)  # validates the host part
    return parts[2], port


def is_quic(text: str) -> bool:
    """Whether `text` names a QUIC v1 address (`…/udp/<port>/quic-v1`)."""
    parts = text.split("/")
    return len(parts) == 6 and parts[3] == "udp" and parts[5] == "quic-v1"


def quic_host_port(text: str) -> tuple[str, int]:
    """(ip, port) of `/ip4/<ip>/udp/<port>/quic-v1`; MalformedFrame otherwise (IPv4
    only: the QUIC endpoint binds an AF_INET socket)."""
    parts = text.split("/")
    if not is_quic(text) or parts[0] or parts[1] != "ip4":
        raise MalformedFrame(f"{text!r} is not an /ip4/<ip>/udp/<port>/quic-v1 address")
    to_bytes(text)  # validates the ip and the port
    return parts[2], int(parts[4])


def from_sockaddr(host: str, port: int) -> str:
    """A socket address as a /ip4 or /ip6 TCP multiaddr."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    proto = "ip4" if ip.version == 4 else "ip6"
    return f"/{proto}/{ip}/tcp/{port}"
