"""Peer addresses in kad-dht answers: the daemon's side (go-libp2p-kad-dht's peerstore).

The DHT core's routing table keeps no addresses in the daemon (the simulator, which
runs the same core, needs none), so the core's answers name closer peers by id alone.
A node that knows a peer only from such answers (an outsider, not in our gossip) then
failed every dial of it with "no known address", until a provider record happened to
name it (docs/reliability.md, 2026-12-06). go-libp2p-kad-dht fills `closerPeers`
from its peerstore (`pb.PeerInfosToPBPeers` with `Peerstore().Addrs`) and adds the
addresses it receives to its peerstore before it dials; the DHT client
(services/dht_client.py) does the same with these two functions:

- answering, `attach`: a closer or provider peer named without addresses gets those
  the transport's address book holds for it (gossip, provider records, dialled
  addresses): only ones our transports dial (TCP; QUIC v1 over IPv4), at most
  `MAX_ANSWER_ADDRS`, and none of a narrower scope than the requester's own address
  (a loopback address goes to a requester on loopback only, a private one to a
  requester on a private or loopback address: js-libp2p's LAN/WAN split, decided per
  requester). A requester whose address we cannot see (WebRTC, relay) counts as
  public. `connection` says whether we are connected to the peer, as in go.
- taking an answer, `clean`: every peer keeps at most `MAX_TAKEN_ADDRS` addresses our
  transports dial, of the responder's scope or wider (a public peer cannot make us
  dial our own loopback or LAN), a `/p2p/` suffix naming that peer removed. One naming
  another peer, a relay circuit, an unparsable, undialable or out-of-scope one is
  dropped, and the excess over the cap is cut; both are counted (`AddrStats`). The
  core then emits `PeerAddressesLearned` with what is left, the peer book hands it to
  the transport, and only then do the lookup's next queries go out: the driver carries
  out a core's effects in order, and that Emit precedes the Sends.
- a requester we know no address for (it only ever dialled us: no gossip, no provider
  record) would be named bare in our answers; the DHT client asks it once (identify,
  as go-libp2p asks every new connection) and keeps `own_addrs` of what it announces.

Pure functions of their arguments (no trio): table-tested in
tests/unit/runtime/services/test_dht_addrs.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import IntEnum

from dht.wire import ConnectionType, KadMessage, PeerInfo
from overlay.core.errors import WireError
from overlay.core.ids import PeerId
from overlay.p2p import multiaddr

#: Addresses given per peer in an answer we send (our daemons listen on one or two).
MAX_ANSWER_ADDRS = 4
#: Addresses taken per peer from an answer we receive (a kubo node's TCP and QUIC, over
#: IPv4 and IPv6, public and private, after the undialable ones are gone).
MAX_TAKEN_ADDRS = 8

#: `Network.known_addrs` (a peer's address-book entry, newest first), `is_connected`.
_Book = Callable[[PeerId], list[str]]
_Connected = Callable[[PeerId], bool]


class Scope(IntEnum):
    """How far an address reaches; an address goes to requesters of its scope or less."""

    LOOPBACK = 0
    PRIVATE = 1
    PUBLIC = 2


@dataclass(slots=True)
class AddrStats:
    """Counters of the DHT client's address handling (Prometheus `colony_dht_addrs`;
    `dropped` and `capped` also in /v1/stats "drops")."""

    #: Addresses we put in our answers for peers the core named without any.
    attached: int = 0
    #: Addresses taken from answers (handed to the core, then the address book).
    taken: int = 0
    #: Dropped from answers: unparsable, undialable, out of scope, another peer's.
    dropped: int = 0
    #: Cut from answers: beyond `MAX_TAKEN_ADDRS` for one peer.
    capped: int = 0
    #: Requesters without a known address asked for theirs (identify), and of those
    #: that gave some we keep, that failed, that were not asked (too many at once).
    identify_asked: int = 0
    identify_learned: int = 0
    identify_failed: int = 0
    identify_skipped: int = 0


def host_scope(host: str) -> Scope:
    """The scope of an IP address or DNS name (a name counts as public)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return Scope.LOOPBACK if host.lower() in ("localhost", "localhost.") else Scope.PUBLIC
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return Scope.LOOPBACK
    return Scope.PUBLIC if ip.is_global else Scope.PRIVATE


def dialable_scope(addr: str) -> Scope | None:
    """The scope of `addr` if our transports dial it (`/ip4|ip6|dns…/H/tcp/P`, or
    `/ip4/A/udp/P/quic-v1`: overlay/p2p/host.py `dial`), else None."""
    try:
        host, port = (multiaddr.quic_host_port(addr) if multiaddr.is_quic(addr)
                      else multiaddr.tcp_host_port(addr))
    except WireError:
        return None
    if port == 0:
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host_scope(host)  # a DNS name
    if ip.is_unspecified or ip.is_multicast:
        return None  # a wildcard listen address, or nothing a connection can reach
    return host_scope(host)


def peer_scope(remote_ip: str | None) -> Scope:
    """The scope of a peer seen at `remote_ip` (its end of our TCP or QUIC connection);
    a peer we cannot see (WebRTC, relay) counts as public: public addresses only."""
    return Scope.PUBLIC if remote_ip is None else host_scope(remote_ip)


def answer_addrs(known: Iterable[str], requester: Scope) -> tuple[bytes, ...]:
    """What an answer says of a peer whose address-book entry is `known` (newest first)."""
    out: list[bytes] = []
    for a in known:
        scope = dialable_scope(a)
        if scope is None or scope < requester:
            continue
        try:
            raw = multiaddr.to_bytes(a)
        except WireError:
            continue
        if raw not in out:
            out.append(raw)
            if len(out) == MAX_ANSWER_ADDRS:
                break
    return tuple(out)


def own_addrs(announced: Iterable[str], seen_from: Scope) -> list[str]:
    """What we keep of the listen addresses a peer announces for itself (identify): ones
    we dial, of the scope we see it from or wider, at most `MAX_ANSWER_ADDRS`."""
    out: list[str] = []
    for a in announced:
        scope = dialable_scope(a)
        if scope is not None and scope >= seen_from and a not in out:
            out.append(a)
            if len(out) == MAX_ANSWER_ADDRS:
                break
    return out


def attach(msg: KadMessage, requester: Scope, known: _Book, connected: _Connected,
           stats: AddrStats) -> KadMessage:
    """`msg` (the core's answer) with addresses for the peers it names without any.

    `known(peer)` is the address book's entry, `connected(peer)` whether a connection
    is open; provider entries that carry their own addresses keep them."""
    closer = tuple(_fill(p, requester, known, connected, stats) for p in msg.closer_peers)
    providers = tuple(_fill(p, requester, known, connected, stats)
                      for p in msg.provider_peers)
    if closer == msg.closer_peers and providers == msg.provider_peers:
        return msg
    return replace(msg, closer_peers=closer, provider_peers=providers)


def clean(msg: KadMessage, responder: Scope, stats: AddrStats) -> KadMessage:
    """`msg` (a peer's answer) with only addresses we may dial, at most
    `MAX_TAKEN_ADDRS` a peer; what was dropped or cut is counted in `stats`."""
    closer = tuple(_clean_peer(p, responder, stats) for p in msg.closer_peers)
    providers = tuple(_clean_peer(p, responder, stats) for p in msg.provider_peers)
    if closer == msg.closer_peers and providers == msg.provider_peers:
        return msg
    return replace(msg, closer_peers=closer, provider_peers=providers)


# ---------------------------------------------------------------- helpers


def _fill(info: PeerInfo, requester: Scope, known: _Book, connected: _Connected,
          stats: AddrStats) -> PeerInfo:
    conn = ConnectionType.CONNECTED if connected(info.peer) else ConnectionType.NOT_CONNECTED
    if info.addrs:
        return info if info.connection == conn else replace(info, connection=conn)
    addrs = answer_addrs(known(info.peer), requester)
    stats.attached += len(addrs)
    return PeerInfo(info.peer, addrs, conn)


def _clean_peer(info: PeerInfo, responder: Scope, stats: AddrStats) -> PeerInfo:
    kept: list[bytes] = []
    for raw in info.addrs:
        base = _usable(info.peer, raw, responder)
        if base is None:
            stats.dropped += 1
        elif base in kept:
            continue  # the same address twice (with and without /p2p/): harmless
        elif len(kept) >= MAX_TAKEN_ADDRS:
            stats.capped += 1
        else:
            kept.append(base)
    stats.taken += len(kept)
    addrs = tuple(kept)
    return info if addrs == info.addrs else replace(info, addrs=addrs)


def _usable(peer: PeerId, raw: bytes, responder: Scope) -> bytes | None:
    """`raw` without its `/p2p/<peer>` suffix if we may dial it, else None."""
    try:
        text = multiaddr.from_bytes(raw)
        named, base = multiaddr.split_p2p(text)
    except WireError:
        return None
    if named is not None and named != peer:
        return None  # another peer's address, or a relay circuit through one
    scope = dialable_scope(base)
    if scope is None or scope < responder:
        return None
    try:
        return raw if named is None else multiaddr.to_bytes(base)
    except WireError:
        return None
