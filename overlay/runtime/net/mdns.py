"""LAN discovery by multicast DNS, as the libp2p mDNS spec describes it.

Spec: github.com/libp2p/specs/blob/master/discovery/mdns.md (on RFC 6762/6763). A node
asks `PTR _p2p._udp.local` on 224.0.0.251:5353; every node answers with
`PTR _p2p._udp.local -> <random name>._p2p._udp.local` and, in the additional section,
a TXT record of that name holding one `dnsaddr=<multiaddr>/p2p/<peer id>` string per
address. js-libp2p (@libp2p/mdns) and kubo (go-libp2p) speak exactly this, so they
see a Colony node on the LAN and it sees them.

Two halves:
- a sans-IO DNS packet codec (`decode`, `encode`) and the few messages discovery needs
  (`query_packet`, `response_packet`, `is_service_query`, `peers_in`). `decode` takes
  any bytes a LAN host may send: every malformation (truncation, compression loops,
  forward pointers, oversize names, counts beyond the packet) raises `DnsError`, and
  nothing else, so a bad packet costs that packet only.
- `MdnsService`, a trio task on one UDP socket (no zeroconf: it is thread/asyncio
  based, ~100x this code, and registers services we don't need; the spec's subset is
  a query, an answer and a TXT parse). It joins the group on every IPv4 interface,
  answers queries (at most once a second, RFC 6762 §6), queries at start-up with
  back-off (1, 2, 4 … s up to `interval_s`), and hands each discovered peer's TCP
  addresses to a callback; the daemon dials them and joins as with bootstrap peers.

Why not the bootstrap list: mDNS needs no configuration on a LAN; it is off by default
(`[discovery] mdns = true` turns it on) since multicast leaks the node's addresses
to everyone on the link.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import random
import socket
import string
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
import trio

from overlay.core.errors import LocalProtocolError, WireError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("colony.mdns")

SERVICE = "_p2p._udp.local"
GROUP_V4 = "224.0.0.251"
PORT = 5353
TYPE_A, TYPE_PTR, TYPE_TXT, TYPE_AAAA, TYPE_SRV, TYPE_ANY = 1, 12, 16, 28, 33, 255
CLASS_IN = 1
#: Top bit of a question's class: "unicast response wanted"; of a record's: cache flush.
CLASS_FLAG = 0x8000
FLAG_RESPONSE = 0x8400  # QR + AA: an authoritative answer
#: RFC 6762 §17: an mDNS packet may be up to 9000 bytes.
MAX_PACKET_BYTES = 9000
MAX_RECORDS = 256
MAX_NAME_BYTES = 255
MAX_LABEL_BYTES = 63
#: Compression pointers followed while reading one name (a loop ends here).
MAX_POINTER_JUMPS = 32
DEFAULT_TTL_S = 120
DNSADDR = b"dnsaddr="


class DnsError(WireError):
    """A malformed DNS packet from the network; drop the packet, nothing else."""


@dataclass(frozen=True, slots=True)
class Question:
    name: str
    qtype: int
    qclass: int = CLASS_IN


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record. `data` is the name for PTR, the strings for TXT, raw
    rdata bytes for every other type (SRV and A/AAAA are carried, not interpreted)."""

    name: str
    rtype: int
    data: str | tuple[bytes, ...] | bytes
    ttl: int = DEFAULT_TTL_S
    rclass: int = CLASS_IN


@dataclass(frozen=True, slots=True)
class Message:
    id: int = 0
    flags: int = 0
    questions: tuple[Question, ...] = ()
    answers: tuple[Record, ...] = ()
    authorities: tuple[Record, ...] = ()
    additionals: tuple[Record, ...] = ()

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)

    def records(self) -> tuple[Record, ...]:
        return self.answers + self.authorities + self.additionals


# ---------------------------------------------------------------- decoding


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise DnsError(f"packet truncated: need {n} bytes at offset {self.pos}")
        out = self.buf[self.pos:end]
        self.pos = end
        return out

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack("!I", self.take(4))[0]
        return value

    def name(self) -> str:
        """A possibly compressed name (RFC 1035 §4.1.4). Pointers must point strictly
        backwards and are followed at most MAX_POINTER_JUMPS times: no loops."""
        labels: list[str] = []
        total = 0
        pos = self.pos
        resume: int | None = None
        jumps = 0
        buf = self.buf
        while True:
            if pos >= len(buf):
                raise DnsError("name runs past the end of the packet")
            n = buf[pos]
            if n & 0xC0 == 0xC0:
                if pos + 1 >= len(buf):
                    raise DnsError("truncated compression pointer")
                target = ((n & 0x3F) << 8) | buf[pos + 1]
                if target >= pos:
                    raise DnsError("compression pointer does not point backwards")
                jumps += 1
                if jumps > MAX_POINTER_JUMPS:
                    raise DnsError("too many compression pointers in one name")
                if resume is None:
                    resume = pos + 2
                pos = target
                continue
            if n & 0xC0:
                raise DnsError(f"unsupported label type {n >> 6:#x}")
            pos += 1
            if n == 0:
                break
            if pos + n > len(buf):
                raise DnsError("label runs past the end of the packet")
            raw = buf[pos:pos + n]
            pos += n
            total += n + 1
            if total > MAX_NAME_BYTES:
                raise DnsError("name longer than 255 bytes")
            try:
                label = raw.decode()
            except UnicodeDecodeError:
                raise DnsError("label is not UTF-8") from None
            if "." in label:
                raise DnsError("label contains a dot")
            labels.append(label)
        self.pos = resume if resume is not None else pos
        return ".".join(labels)


def decode(packet: bytes) -> Message:
    """Parse one DNS message; raise `DnsError` (only) when it is malformed."""
    if len(packet) > MAX_PACKET_BYTES:
        raise DnsError(f"packet of {len(packet)} bytes exceeds {MAX_PACKET_BYTES}")
    r = _Reader(bytes(packet))
    ident, flags, qd, an, ns, ar = struct.unpack("!6H", r.take(12))
    if qd + an + ns + ar > MAX_RECORDS:
        raise DnsError(f"{qd + an + ns + ar} entries exceed the limit of {MAX_RECORDS}")
    questions = []
    for _ in range(qd):
        name = r.name()
        qtype, qclass = r.u16(), r.u16()
        questions.append(Question(name, qtype, qclass))
    sections: list[tuple[Record, ...]] = []
    for count in (an, ns, ar):
        sections.append(tuple(_record(r) for _ in range(count)))
    return Message(ident, flags, tuple(questions), *sections)


def _record(r: _Reader) -> Record:
    name = r.name()
    rtype, rclass, ttl, rdlen = r.u16(), r.u16(), r.u32(), r.u16()
    start = r.pos
    end = start + rdlen
    if end > len(r.buf):
        raise DnsError("record data runs past the end of the packet")
    data: str | tuple[bytes, ...] | bytes
    if rtype == TYPE_PTR:
        data = r.name()
        if r.pos != end:
            raise DnsError("PTR data length does not match its name")
    elif rtype == TYPE_TXT:
        strings = []
        while r.pos < end:
            n = r.take(1)[0]
            if r.pos + n > end:
                raise DnsError("TXT string runs past its record")
            strings.append(r.take(n))
        data = tuple(strings)
    else:
        data = r.take(rdlen)
    r.pos = end
    return Record(name, rtype, data, ttl, rclass)


# ---------------------------------------------------------------- encoding


def _encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.split(".") if name else ():
        raw = label.encode()
        if not 0 < len(raw) <= MAX_LABEL_BYTES:
            raise LocalProtocolError(f"DNS label {label!r} must be 1-63 bytes")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > MAX_NAME_BYTES + 1:
        raise LocalProtocolError(f"DNS name {name!r} is longer than 255 bytes")
    return bytes(out)


def _encode_record(rec: Record) -> bytes:
    if rec.rtype == TYPE_PTR:
        if not isinstance(rec.data, str):
            raise LocalProtocolError("PTR data must be a name")
        rdata = _encode_name(rec.data)
    elif rec.rtype == TYPE_TXT:
        if not isinstance(rec.data, tuple):
            raise LocalProtocolError("TXT data must be a tuple of byte strings")
        rdata = b""
        for s in rec.data:
            if len(s) > 255:
                raise LocalProtocolError("a TXT string is at most 255 bytes")
            rdata += bytes([len(s)]) + s
    else:
        if not isinstance(rec.data, bytes):
            raise LocalProtocolError(f"type {rec.rtype} data must be raw bytes")
        rdata = rec.data
    if len(rdata) > 0xFFFF:
        raise LocalProtocolError("record data longer than 65535 bytes")
    return (_encode_name(rec.name)
            + struct.pack("!HHIH", rec.rtype, rec.rclass, rec.ttl, len(rdata)) + rdata)


def encode(msg: Message) -> bytes:
    """Serialise without name compression (valid DNS, and the packets stay small)."""
    out = bytearray(struct.pack("!6H", msg.id, msg.flags, len(msg.questions), len(msg.answers),
                                len(msg.authorities), len(msg.additionals)))
    for q in msg.questions:
        out += _encode_name(q.name) + struct.pack("!HH", q.qtype, q.qclass)
    for rec in msg.records():
        out += _encode_record(rec)
    return bytes(out)


# ---------------------------------------------------------------- libp2p mDNS messages


def query_packet() -> bytes:
    return encode(Message(questions=(Question(SERVICE, TYPE_PTR),)))


def response_packet(peer_name: str, dnsaddrs: list[str], ttl: int = DEFAULT_TTL_S) -> bytes:
    """Our answer: PTR to `<peer_name>._p2p._udp.local`, TXT `dnsaddr=…` for each address
    (each ending in /p2p/<our id>). Addresses beyond one packet are left out."""
    instance = f"{peer_name}.{SERVICE}"
    strings: list[bytes] = []
    size = 0
    for a in dnsaddrs:
        s = DNSADDR + a.encode()
        if len(s) > 255 or size + len(s) > 1200:  # stay within one Ethernet frame
            continue
        strings.append(s)
        size += len(s) + 1
    return encode(Message(
        flags=FLAG_RESPONSE,
        answers=(Record(SERVICE, TYPE_PTR, instance, ttl),),
        additionals=(Record(instance, TYPE_TXT, tuple(strings), ttl),),
    ))


def is_service_query(msg: Message) -> bool:
    return not msg.is_response and any(
        q.name.lower() == SERVICE and q.qtype in (TYPE_PTR, TYPE_ANY) for q in msg.questions
    )


def peers_in(msg: Message) -> dict[str, list[str]]:
    """Peer id → multiaddrs (with /p2p/<id>) from the TXT `dnsaddr=` strings of a
    response. Records outside `_p2p._udp.local`, strings without a peer id, and
    undecodable strings are skipped: one odd record costs itself only."""
    out: dict[str, list[str]] = {}
    if not msg.is_response:
        return out
    for rec in msg.records():
        if rec.rtype != TYPE_TXT or not rec.name.lower().endswith("." + SERVICE):
            continue
        assert isinstance(rec.data, tuple)
        for s in rec.data:
            if not s.startswith(DNSADDR):
                continue
            try:
                addr = s[len(DNSADDR):].decode("ascii")
            except UnicodeDecodeError:
                continue
            head, sep, peer = addr.rpartition("/p2p/")
            if not sep or not head or not peer or "/" in peer:
                continue
            addrs = out.setdefault(peer, [])
            if addr not in addrs:
                addrs.append(addr)
    return out


def dialable(addrs: list[str], source_ip: str) -> list[str]:
    """TCP addresses worth dialling, the one on the packet's source address first.

    Loopback addresses a LAN peer advertises would reach ourselves, so they are used
    only when the packet itself came over loopback."""
    out = []
    for a in addrs:
        parts = a.split("/")
        if len(parts) < 7 or parts[1] != "ip4" or parts[3] != "tcp" or parts[5] != "p2p":
            continue
        try:
            ip = ipaddress.IPv4Address(parts[2])
        except ValueError:
            continue
        if ip.is_loopback and not ipaddress.IPv4Address(source_ip).is_loopback:
            continue
        out.append(a)
    out.sort(key=lambda a: a.split("/")[2] != source_ip)
    return out


# ---------------------------------------------------------------- interfaces


SIOCGIFADDR = 0x8915


def interface_ipv4s() -> list[tuple[int, str, str]]:
    """(index, name, IPv4 address) of each interface that has one (Linux ioctl)."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for index, name in socket.if_nameindex():
            try:
                req = struct.pack("256s", name.encode()[:15])
                res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)
            except OSError:
                continue  # no IPv4 address, or down
            out.append((index, name, socket.inet_ntoa(res[20:24])))
    return out


def expand_addrs(listen: list[str], ips: list[str]) -> list[str]:
    """Listen multiaddrs (`…/p2p/<id>`) with 0.0.0.0 replaced by each interface IP;
    loopback addresses are dropped when any other exists (they mean nothing on a LAN)."""
    out: list[str] = []
    for a in listen:
        parts = a.split("/")
        if len(parts) > 2 and parts[1] == "ip4" and parts[2] == "0.0.0.0":
            for ip in ips:
                out.append("/".join([*parts[:2], ip, *parts[3:]]))
        elif len(parts) > 2 and parts[1] == "ip4":
            out.append(a)
    lan = [a for a in out if not a.split("/")[2].startswith("127.")]
    return list(dict.fromkeys(lan or out))


# ---------------------------------------------------------------- the trio service


@dataclass(slots=True)
class MdnsStats:
    packets_in: int = 0
    malformed: int = 0
    queries_answered: int = 0
    queries_sent: int = 0
    peers_seen: int = 0
    send_errors: int = 0


class MdnsService:
    """Answer and ask `_p2p._udp.local` on every IPv4 interface; report peers found."""

    def __init__(
        self,
        peer_id: str,
        listen_addrs: Callable[[], list[str]],
        on_peer: Callable[[str, list[str]], None],
        *,
        interval_s: float = 60.0,
        rng: random.Random | None = None,
        port: int = PORT,
    ) -> None:
        self.peer_id = peer_id
        self.listen_addrs = listen_addrs
        self.on_peer = on_peer
        self.interval_s = interval_s
        self.port = port
        rng = rng or random.Random()
        # The spec wants a random instance name, so the name itself leaks nothing.
        self.peer_name = "".join(rng.choice(string.ascii_lowercase + string.digits)
                                 for _ in range(32))
        self.stats = MdnsStats()
        self._last_answer = -1e9
        self._ifaces: list[tuple[int, str, str]] = []

    def _open(self) -> trio.socket.SocketType:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(AttributeError, OSError):  # lets avahi & co. share 5353
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)  # RFC 6762 §11
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        self._ifaces = [i for i in interface_ipv4s() if not i[2].startswith("127.")]
        joined = 0
        for index, name, _ip in self._ifaces:
            mreqn = socket.inet_aton(GROUP_V4) + socket.inet_aton("0.0.0.0") + struct.pack(
                "@i", index)
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
                joined += 1
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    log.debug("mdns_join_failed", interface=name, error=str(e))
        if not joined:
            sock.close()
            raise OSError("mDNS: no IPv4 interface (other than loopback) could join "
                          f"{GROUP_V4}")
        return sock

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = self._open()
        await sock.bind(("0.0.0.0", self.port))
        log.info("mdns_started", interfaces=[i[1] for i in self._ifaces], name=self.peer_name)
        with sock:
            async with trio.open_nursery() as n:
                n.start_soon(self._receive, sock)
                task_status.started()
                await self._announce(sock)
                n.start_soon(self._query_loop, sock)

    async def _send(self, sock: trio.socket.SocketType, packet: bytes) -> None:
        """Send on each interface (IP_MULTICAST_IF), so multi-homed hosts reach all LANs."""
        for index, name, _ip in self._ifaces:
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                socket.inet_aton(GROUP_V4) + socket.inet_aton("0.0.0.0")
                                + struct.pack("@i", index))
                await sock.sendto(packet, (GROUP_V4, self.port))
            except OSError as e:
                self.stats.send_errors += 1
                log.debug("mdns_send_failed", interface=name, error=str(e))

    def _response(self) -> bytes:
        ips = [ip for _i, _n, ip in self._ifaces]
        return response_packet(self.peer_name, expand_addrs(self.listen_addrs(), ips))

    async def _announce(self, sock: trio.socket.SocketType) -> None:
        self._last_answer = trio.current_time()
        await self._send(sock, self._response())

    async def _query_loop(self, sock: trio.socket.SocketType) -> None:
        delay = 1.0
        while True:
            self.stats.queries_sent += 1
            await self._send(sock, query_packet())
            await trio.sleep(delay)
            delay = min(delay * 2, self.interval_s)

    async def _receive(self, sock: trio.socket.SocketType) -> None:
        while True:
            data, (src, _port) = await sock.recvfrom(MAX_PACKET_BYTES + 1)
            self.stats.packets_in += 1
            try:
                msg = decode(data)
            except DnsError as e:
                self.stats.malformed += 1
                log.debug("mdns_bad_packet", source=src, error=str(e))
                continue
            if is_service_query(msg):
                # RFC 6762 §6: a record is multicast at most once per second.
                if trio.current_time() - self._last_answer >= 1.0:
                    self.stats.queries_answered += 1
                    await self._announce(sock)
                continue
            for peer, addrs in peers_in(msg).items():
                if peer == self.peer_id:
                    continue  # our own answer, looped back
                usable = dialable(addrs, src)
                if usable:
                    self.stats.peers_seen += 1
                    self.on_peer(peer, usable)
