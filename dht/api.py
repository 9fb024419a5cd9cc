"""Commands the node gives the DHT core, the events it emits, and its configuration.

Commands are inputs to `Kademlia.handle(cmd, now)`; results come back as
`Emit(LookupDone(request_id, result, …))` once the iterative lookup ends. Request ids
are chosen by the caller and only echoed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

from dht.providers import PROVIDER_TTL_S, REPROVIDE_INTERVAL_S
from dht.wire import PeerInfo
from overlay.core.errors import LocalProtocolError
from overlay.core.ids import PeerId

# ---------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class KadConfig:
    #: "server" answers and stores; "client" only looks up (kad-dht client mode: it
    #: neither answers requests nor enters other peers' routing tables); "auto" serves
    #: until `ReachabilityLearned(False)` says others cannot reach us, and again after
    #: `ReachabilityLearned(True)` (go-libp2p-kad-dht's ModeAuto, driven by AutoNAT).
    mode: Literal["server", "client", "auto"] = "server"
    k: int = 20
    alpha: int = 3
    #: S/Kademlia disjoint paths per lookup (1 = plain Kademlia).
    disjoint_paths: int = 1
    rpc_timeout_s: float = 10.0
    #: A lookup query unanswered after an RTO (srtt + 4·rttvar of answered RPCs, at
    #: least this) stops holding up its lookup; it fails only at `rpc_timeout_s`.
    rpc_soft_timeout_min_s: float = 0.25
    #: The soft timeout before any RTT was measured (RFC 6298 starts at 1 s).
    rpc_soft_timeout_initial_s: float = 2.0
    #: Consecutive RPC failures before a table entry without a replacement is evicted.
    max_fails: int = 2
    replacement_size: int = 10
    #: A full bucket PINGs its least-recently-seen entry for a newcomer only if that
    #: entry has been silent this long.
    probe_after_s: float = 600.0
    #: Refresh any bucket no lookup has touched for this long (kubo: 10 min; paper: 1 h).
    refresh_interval_s: float = 3600.0
    refresh_check_s: float = 600.0
    #: Deeper buckets are covered by the self-lookup (go-libp2p-kbucket: 15).
    max_refresh_cpl: int = 12
    provider_ttl_s: float = PROVIDER_TTL_S
    reprovide_interval_s: float = REPROVIDE_INTERVAL_S
    #: Housekeeping (record expiry) period.
    expire_interval_s: float = 3600.0
    get_providers_count: int = 20
    get_value_quorum: int = 3
    #: At most this many lookups at once (commands beyond it fail with "busy").
    max_lookups: int = 256
    #: At most this many RPCs awaiting an answer; beyond it a query is treated as failed.
    max_pending_rpcs: int = 4096
    #: Multihashes this node keeps providing (reprovided every 22 h).
    max_provided_keys: int = 1_000_000
    #: Sweep: region lookups running at once, and the window of each region lookup.
    sweep_parallelism: int = 8
    #: Spread a reprovide's regions over the interval by keyspace position (kubo's
    #: sweeping reprovider) instead of announcing them all at once.
    pace_reprovide: bool = True
    region_lookup_size: int = 40
    #: Regions are sized to hold this many times k peers (see providers.region_bits).
    region_peers_per_k: float = 1.0
    max_record_bytes: int = 64 * 1024
    #: Maximum providers returned in one GET_PROVIDERS answer: every record a server
    #: may hold for a key (`ProviderLimits.max_per_key`), as kubo returns all it has.
    #: Was 20: a cell rendezvous key with more than 20 providers (cells of a site, or
    #: providers that stopped) hid the newest from every reader (sim/cells_rdv.py).
    max_providers_per_answer: int = 64
    #: Server/client verdicts on requesters remembered (oldest dropped), and how long.
    max_role_checks: int = 4096
    role_check_ttl_s: float = 600.0
    #: Inbound requests per peer: a token bucket of `request_burst` refilled at
    #: `request_rate_per_s`; over-limit requests are dropped and counted
    #: (dht/rate_limit.py). At most `max_rate_limited_peers` buckets are kept.
    request_burst: int = 500
    request_rate_per_s: float = 100.0
    max_rate_limited_peers: int = 4096

    def __post_init__(self) -> None:
        if self.mode not in ("server", "client", "auto"):
            raise ValueError(
                f'dht mode must be "server", "client" or "auto", not {self.mode!r}')


# ---------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class AddPeer:
    """A peer we heard of out of band (gossip, config). It is PINGed and enters the
    table only when it answers."""

    peer: PeerId
    addrs: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerRoleLearned:
    """The node learned whether `peer` is a DHT server, out of band (e.g. identify
    listed the kad protocol, or did not). Spares the PING that would verify it."""

    peer: PeerId
    server: bool


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Join: ask these peers for our own neighbourhood, then refresh every bucket."""

    peers: tuple[PeerInfo, ...]
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class FindNode:
    request_id: int
    key: bytes  # a peer id's bytes, or any key bytes (its position is sha256(key))


@dataclass(frozen=True, slots=True)
class GetProviders:
    request_id: int
    key: bytes  # a CID's multihash bytes
    count: int = 0  # 0: config.get_providers_count


@dataclass(frozen=True, slots=True)
class Provide:
    """Start providing these multihashes: announce now (one lookup per key region) and
    re-announce every `reprovide_interval_s`."""

    request_id: int
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StopProviding:
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ReachabilityLearned:
    """Whether other peers can dial us (the node's AutoNAT verdict). In mode "auto" it
    switches the core between server and client; other modes ignore it."""

    reachable: bool


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """Our request `rid` to `peer` failed on its stream (refused: a DHT client has no
    handler; reset; a bad reply). Fails that one RPC. Unlike `PeerUnreachable`, which
    the driver sends when a connection is lost, it says nothing about the peer's other
    protocols, so it reaches the DHT core only."""

    peer: PeerId
    rid: int


@dataclass(frozen=True, slots=True)
class PutValue:
    request_id: int
    key: bytes
    value: bytes  # a record value valid under the key's namespace


@dataclass(frozen=True, slots=True)
class GetValue:
    request_id: int
    key: bytes
    quorum: int = 0  # 0: config.get_value_quorum


Command = AddPeer | Bootstrap | FindNode | GetProviders | Provide | StopProviding | PutValue \
    | GetValue | PeerRoleLearned | ReachabilityLearned | RequestFailed
COMMAND_TYPES: tuple[type, ...] = (AddPeer, Bootstrap, FindNode, GetProviders, Provide,
                                   StopProviding, PutValue, GetValue, PeerRoleLearned,
                                   ReachabilityLearned, RequestFailed)

# ---------------------------------------------------------------- results and events


@dataclass(frozen=True, slots=True)
class ClosestPeers:
    peers: tuple[PeerId, ...]


@dataclass(frozen=True, slots=True)
class Providers:
    providers: tuple[PeerInfo, ...]
    closest: tuple[PeerId, ...]


@dataclass(frozen=True, slots=True)
class Value:
    """The best valid record found (None if none), with its sequence number."""

    value: bytes | None
    seq: int
    payload: bytes | None
    valid_responses: int


@dataclass(frozen=True, slots=True)
class Stored:
    """PUT_VALUE outcome: how many of the k closest acknowledged the record."""

    acks: int
    peers: tuple[PeerId, ...]


Result = ClosestPeers | Providers | Value | Stored
R = TypeVar("R", ClosestPeers, Providers, Value, Stored)


@dataclass(frozen=True, slots=True)
class LookupDone:
    request_id: int
    result: Result
    #: Sequential request rounds to the result (see lookup.Lookup.hops).
    hops: int
    #: Requests sent by the lookup walk.
    queried: int
    error: str | None = None


def result_as(ev: LookupDone, kind: type[R]) -> R:
    """`ev`'s result as the type its command always gives (FindNode: ClosestPeers,
    GetProviders: Providers, GetValue: Value, PutValue: Stored; also on error)."""
    if not isinstance(ev.result, kind):
        raise LocalProtocolError(
            f"DHT result is {type(ev.result).__name__}, not {kind.__name__}")
    return ev.result


@dataclass(frozen=True, slots=True)
class ProvidersFound:
    """Providers a GetProviders command learned, as they arrive (kubo's
    FindProvidersAsync): the ones the core already knows when the command starts, each
    new one an answer brings during the walk, and those in answers that come after the
    walk ended (`LookupDone`) from queries that had passed their soft timeout. Every
    provider appears in at most one event of a command, and every GetProviders command
    ends with exactly one event with `last` set, after its `LookupDone`: no answer that
    could add a provider is outstanding any more (at most `rpc_timeout_s` after the
    walk ended)."""

    request_id: int
    providers: tuple[PeerInfo, ...]
    last: bool = False


@dataclass(frozen=True, slots=True)
class ProvideDone:
    """A sweep (first announcement or reprovide) finished."""

    request_id: int
    keys: int
    regions: int
    lookups: int
    messages: int


@dataclass(frozen=True, slots=True)
class ModeChanged:
    """The core started or stopped serving (mode "auto"); the driver registers or
    removes its kad handler to match."""

    server: bool


@dataclass(frozen=True, slots=True)
class PeerAddressesLearned:
    """Multiaddrs heard for a peer (from closerPeers/providerPeers); for the peerstore."""

    peer: PeerId
    addrs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class BootstrapDone:
    request_id: int
    table_size: int
