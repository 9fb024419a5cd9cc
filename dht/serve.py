"""Answering one inbound DHT request: a function of the request and the state it is given.

`serve(peer, msg, now, state)` returns the reply to `msg` from `peer` (None: no reply)
— libp2p kad-dht spec, one rule per message type:

| request        | reply                                           | state touched          |
|----------------|-------------------------------------------------|------------------------|
| PING           | PING                                            | —                      |
| FIND_NODE      | the k closest peers we know, requester excluded | —                      |
| GET_PROVIDERS  | stored providers (and us, if we provide the key) + closer peers | —   |
| ADD_PROVIDER   | none (fire-and-forget)                          | provider store         |
| GET_VALUE      | our record for the key, if any, + closer peers  | —                      |
| PUT_VALUE      | the record echoed if validated and stored, else none in the reply | value store |

Rules: a provider key must be a multihash (else no reply); only the sender may
announce itself as a provider (go-libp2p-kad-dht does the same), and at most k entries
of an ADD_PROVIDER are read; a record is validated (dht/records.py) and size-checked
before it is stored. Each refusal is counted in `DhtStats`.

No `self`, no effects, no RPCs: the state it reads (routing table, what we provide)
and writes (provider and value stores, counters) is passed in as `ServeState`. Who
may be served at all (client mode, requester checks) is the core's business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dht.api import KadConfig
from dht.providers import ProviderStore, is_provider_key
from dht.records import Validators, ValueStore
from dht.routing_table import RoutingTable
from dht.stats import DhtStats
from dht.wire import KadMessage, MessageType, PeerInfo, Record
from overlay.core.errors import RemoteProtocolError, WireError
from overlay.core.ids import PeerId, key_of_bytes


@dataclass(frozen=True, slots=True)
class ServeState:
    """What answering requests reads and writes; the stores are shared with the core."""

    me: PeerId
    addrs: tuple[bytes, ...]
    config: KadConfig
    #: Read only: the closer peers of every answer.
    table: RoutingTable
    providers: ProviderStore
    values: ValueStore
    validators: Validators
    #: Multihashes we provide ourselves (→ dht key).
    provided: Mapping[bytes, int]
    stats: DhtStats


def serve(peer: PeerId, msg: KadMessage, now: float, state: ServeState) -> KadMessage | None:
    """The reply to request `msg` from `peer`, or None when none is due."""
    return _ANSWERS[msg.type](peer, msg, now, state)


def _ping(peer: PeerId, m: KadMessage, now: float, st: ServeState) -> KadMessage:
    return KadMessage(MessageType.PING)


def _find_node(peer: PeerId, m: KadMessage, now: float, st: ServeState) -> KadMessage:
    return KadMessage(m.type, m.key, closer_peers=_closer(m.key, peer, st))


def _get_providers(peer: PeerId, m: KadMessage, now: float,
                   st: ServeState) -> KadMessage | None:
    if not is_provider_key(m.key):
        st.stats.bad_keys += 1
        return None
    n = st.config.max_providers_per_answer
    found = st.providers.get(m.key, now, n)
    if m.key in st.provided and len(found) < n:
        found.append(PeerInfo(st.me, st.addrs))
    return KadMessage(m.type, m.key, closer_peers=_closer(m.key, peer, st),
                      provider_peers=tuple(found))


def _add_provider(peer: PeerId, m: KadMessage, now: float, st: ServeState) -> None:
    if not is_provider_key(m.key):
        st.stats.bad_keys += 1
        return
    for info in m.provider_peers[: st.config.k]:
        if info.peer != peer:
            # Only the sender may announce itself (go-libp2p-kad-dht does the same).
            st.stats.provider_sender_mismatch += 1
            continue
        res = st.providers.add(m.key, peer, info.addrs, now)
        if res in ("stored", "refreshed", "evicted"):
            st.stats.providers_stored += 1
            st.stats.provider_evictions += res == "evicted"
        else:
            st.stats.provider_refusals += 1


def _get_value(peer: PeerId, m: KadMessage, now: float, st: ServeState) -> KadMessage:
    rec = st.values.get(m.key, now)
    return KadMessage(m.type, m.key, None if rec is None else Record(rec.key, rec.value),
                      closer_peers=_closer(m.key, peer, st))


def _put_value(peer: PeerId, m: KadMessage, now: float, st: ServeState) -> KadMessage:
    return KadMessage(m.type, m.key, _store_record(peer, m, now, st))


def _store_record(peer: PeerId, m: KadMessage, now: float, st: ServeState) -> Record | None:
    """Validate and store; echo the record on success, answer without one otherwise."""
    r = m.record
    if r is None or r.key != m.key or len(r.value) > st.config.max_record_bytes:
        st.stats.records_rejected += 1
        return None
    try:
        rec = st.validators.validate(r.key, r.value, now)
    except (RemoteProtocolError, WireError):
        st.stats.records_rejected += 1
        return None
    res = st.values.put(rec, peer, st.validators, now)
    if res != "stored":
        st.stats.record_store_refusals += 1
        return None
    st.stats.records_stored += 1
    return Record(r.key, r.value)


def _closer(key: bytes, requester: PeerId, st: ServeState) -> tuple[PeerInfo, ...]:
    t = st.table
    return tuple(PeerInfo(p, t.addrs(p))
                 for p in t.closest(key_of_bytes(key), st.config.k, exclude=requester))


_Answer = Callable[[PeerId, KadMessage, float, ServeState], KadMessage | None]

#: One rule per request type (every `MessageType` has one).
_ANSWERS: dict[MessageType, _Answer] = {
    MessageType.PING: _ping,
    MessageType.FIND_NODE: _find_node,
    MessageType.GET_PROVIDERS: _get_providers,
    MessageType.ADD_PROVIDER: _add_provider,
    MessageType.GET_VALUE: _get_value,
    MessageType.PUT_VALUE: _put_value,
}
