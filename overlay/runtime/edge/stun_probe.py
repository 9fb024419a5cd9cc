"""STUN binding probes (RFC 5389 §6–7, §15.2) and NAT mapping classification (RFC 4787).

A node sends one Binding request from one UDP socket to two STUN server addresses
(different IPs) and compares the mapped addresses they report:

* mapped == the socket's own address: no NAT on the path (`none`);
* same mapped IP and port from both servers: the NAT keeps one mapping for the
  socket whatever the destination — endpoint-independent mapping (RFC 4787 §4.1),
  which UDP hole punching can traverse;
* different mapped ports: address-dependent mapping — a "symmetric" NAT (e.g.
  iptables MASQUERADE `--random-fully`); hole punching fails, relay is needed.

The codec is pure (`binding_request`, `parse_binding_response`, `classify`);
`probe_sync` (stdlib socket) serves `colony doctor` without a daemon and the test
topology, `probe` (trio) serves the daemon. Run as a script inside a namespace:
`python -m overlay.runtime.edge.stun_probe 198.18.0.10:3478 198.18.0.11:3478`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_XOR_MAPPED_ADDRESS = 0x0020
HEADER = struct.Struct("!HHI12s")
#: Retransmissions per server (RFC 5389 §7.2.1 uses 7; a probe must stay short).
TRIES = 3
TRY_TIMEOUT_S = 0.5

NAT_NONE = "none"
NAT_ENDPOINT_INDEPENDENT = "endpoint-independent"
NAT_SYMMETRIC = "symmetric"
NAT_UNKNOWN = "unknown"


class StunError(ValueError):
    """A reply that is not a well-formed Binding success for our transaction."""


@dataclass(frozen=True, slots=True)
class StunResult:
    """One probe: our socket's address and what each answering server saw."""

    local: tuple[str, int]
    #: server "ip:port" → mapped (ip, port); servers that never answered are absent.
    mapped: dict[str, tuple[str, int]]
    nat_type: str
    error: str = ""

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["local"] = f"{self.local[0]}:{self.local[1]}"
        d["mapped"] = {s: f"{ip}:{port}" for s, (ip, port) in self.mapped.items()}
        return d


def binding_request(txid: bytes) -> bytes:
    if len(txid) != 12:
        raise ValueError("STUN transaction id is 12 bytes")
    return HEADER.pack(BINDING_REQUEST, 0, MAGIC_COOKIE, txid)


def parse_binding_response(data: bytes, txid: bytes) -> tuple[str, int]:
    """The (ip, port) a Binding success reports for us; raises StunError otherwise."""
    if len(data) < HEADER.size:
        raise StunError("short STUN message")
    mtype, length, cookie, tid = HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE or tid != txid:
        raise StunError("not our transaction")
    if mtype != BINDING_SUCCESS:
        raise StunError(f"STUN message type {mtype:#06x} is not a Binding success")
    if HEADER.size + length > len(data):
        raise StunError("truncated STUN attributes")
    pos, end = HEADER.size, HEADER.size + length
    plain: tuple[str, int] | None = None
    while pos + 4 <= end:
        atype, alen = struct.unpack_from("!HH", data, pos)
        value = data[pos + 4 : pos + 4 + alen]
        if len(value) != alen:
            raise StunError("truncated STUN attribute")
        pos += 4 + alen + (-alen % 4)  # attributes are padded to 4 bytes
        if atype in (ATTR_XOR_MAPPED_ADDRESS, ATTR_MAPPED_ADDRESS) and alen >= 8:
            family, port = struct.unpack_from("!xBH", value)
            if family != 0x01:
                continue  # IPv6: not probed here
            raw = int.from_bytes(value[4:8], "big")
            if atype == ATTR_XOR_MAPPED_ADDRESS:
                port ^= MAGIC_COOKIE >> 16
                raw ^= MAGIC_COOKIE
                return str(ipaddress.IPv4Address(raw)), port
            plain = (str(ipaddress.IPv4Address(raw)), port)
    if plain is None:
        raise StunError("Binding success without a mapped address")
    return plain


def classify(local: tuple[str, int], mapped: list[tuple[str, int]]) -> str:
    """RFC 4787 mapping behaviour from one socket's mapped addresses (≥ 2 servers)."""
    if not mapped:
        return NAT_UNKNOWN
    if all(m == local for m in mapped):
        return NAT_NONE
    if len(mapped) < 2:
        return NAT_UNKNOWN  # NAT'd, but one server cannot tell the mapping kind
    return NAT_ENDPOINT_INDEPENDENT if len(set(mapped)) == 1 else NAT_SYMMETRIC


def parse_server(text: str) -> tuple[str, int]:
    # Also takes ICE-style urls: "stun:host:3478", "stun:host:3478?transport=udp".
    host, _, port = text.strip().removeprefix("stun:").split("?")[0].rpartition(":")
    try:
        return host or text, int(port) if port else 3478
    except ValueError:
        raise ValueError(f"STUN server {text!r} is not host:port") from None


def _local_ip_towards(server: tuple[str, int]) -> str:
    """The source IP the kernel picks for `server` (an unconnected socket says 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(server)
        return str(s.getsockname()[0])


def probe_sync(servers: list[str], timeout_s: float = TRY_TIMEOUT_S) -> StunResult:
    """Probe `servers` (host:port) from one UDP socket; blocking, bounded by TRIES."""
    addrs = [parse_server(s) for s in servers]
    if not addrs:
        return StunResult(("0.0.0.0", 0), {}, NAT_UNKNOWN, "no STUN servers configured")
    try:
        local_ip = _local_ip_towards(addrs[0])
    except OSError as e:
        return StunResult(("0.0.0.0", 0), {}, NAT_UNKNOWN, f"no route to {servers[0]}: {e}")
    mapped: dict[str, tuple[str, int]] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((local_ip, 0))
        local = (local_ip, int(s.getsockname()[1]))
        for text, addr in zip(servers, addrs, strict=True):
            txid = os.urandom(12)
            for _ in range(TRIES):
                try:
                    s.sendto(binding_request(txid), addr)
                except OSError:
                    break
                deadline = time.monotonic() + timeout_s
                got = None
                while got is None and (left := deadline - time.monotonic()) > 0:
                    s.settimeout(left)
                    try:
                        data, _src = s.recvfrom(2048)
                        got = parse_binding_response(data, txid)
                    except (TimeoutError, StunError, OSError):
                        continue
                if got is not None:
                    mapped[text] = got
                    break
    missing = [t for t in servers if t not in mapped]
    err = f"no answer from {', '.join(missing)}" if missing else ""
    return StunResult(local, mapped, classify(local, list(mapped.values())), err)


async def probe(servers: list[str], timeout_s: float = TRY_TIMEOUT_S) -> StunResult:
    """`probe_sync` for the trio daemon (one worker thread; a probe lasts ≤ ~3 s)."""
    import trio

    return await trio.to_thread.run_sync(probe_sync, servers, timeout_s)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m overlay.runtime.edge.stun_probe HOST:PORT [HOST:PORT ...]\n"
              "Send STUN Binding requests from one UDP socket; print mapped addresses "
              "and the NAT mapping type as JSON.")
        return 2
    print(json.dumps(probe_sync(argv).as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
