"""`serve()` as a table: request and state in, reply and state changes out.

Every row starts from the same state (30 peers in the table; one stored provider
record for MH_STORED; MH_OURS provided by us; the name record KEY at seq 5) and gives
one request from REQUESTER. Columns: the reply (None: no reply; else its record,
providers and number of closer peers), the counters that moved, and the provider and
value store sizes after the call.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from dht.api import KadConfig
from dht.providers import ProviderStore
from dht.records import Validators, ValueStore, make_name_record
from dht.routing_table import RoutingTable
from dht.serve import ServeState, serve
from dht.stats import DhtStats
from dht.wire import KadMessage, MessageType, PeerInfo, Record
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.core.multiformats import multihash_sha256


def pid(i: int) -> PeerId:
    return PeerId.from_ed25519(random.Random(i).randbytes(32))


ME = pid(0)
REQUESTER = pid(5)  # in the table: never among the closer peers it is sent
OTHER = pid(666)
MY_ADDRS = (b"/me",)
K = 4
NOW = 10.0
OWNER = KeyPair.from_rng_seed(bytes([9]) * 32)
KEY, SEQ5 = make_name_record(OWNER, b"v5", 5, 1e9)
_, SEQ6 = make_name_record(OWNER, b"v6", 6, 1e9)
_, SEQ4 = make_name_record(OWNER, b"v4", 4, 1e9)
MH_STORED = multihash_sha256(b"stored")
MH_OURS = multihash_sha256(b"ours")
MH_NEW = multihash_sha256(b"new")
T = MessageType


def fresh_state() -> ServeState:
    cfg = KadConfig(k=K, max_providers_per_answer=2, max_record_bytes=1024)
    table = RoutingTable(ME, K, 10, 2, 600.0)
    for i in range(1, 31):
        table.seen(pid(i), 0.0)
    validators = Validators()
    providers = ProviderStore()
    providers.add(MH_STORED, OTHER, (b"/other",), 0.0)
    values = ValueStore()
    values.put(validators.validate(KEY, SEQ5, 0.0), OTHER, validators, 0.0)
    return ServeState(ME, MY_ADDRS, cfg, table, providers, values, validators,
                      {MH_OURS: 0}, DhtStats())


@dataclass(frozen=True)
class Row:
    name: str
    msg: KadMessage
    #: The reply's record; "no reply" when none is due.
    record: Record | str | None = "no reply"
    providers: tuple[PeerInfo, ...] = ()
    closer: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    stores: tuple[int, int] = (1, 1)  # (provider records, value records) after the call


ROWS = [
    Row("ping", KadMessage(T.PING), record=None),
    Row("find_node", KadMessage(T.FIND_NODE, MH_NEW), record=None, closer=K),
    Row("get_providers stored", KadMessage(T.GET_PROVIDERS, MH_STORED), record=None,
        providers=(PeerInfo(OTHER, (b"/other",)),), closer=K),
    Row("get_providers ours", KadMessage(T.GET_PROVIDERS, MH_OURS), record=None,
        providers=(PeerInfo(ME, MY_ADDRS),), closer=K),
    Row("get_providers unknown", KadMessage(T.GET_PROVIDERS, MH_NEW), record=None, closer=K),
    Row("get_providers not a multihash", KadMessage(T.GET_PROVIDERS, b"\xff\xff"),
        counters={"bad_keys": 1}),
    Row("add_provider self", KadMessage(T.ADD_PROVIDER, MH_NEW,
                                        provider_peers=(PeerInfo(REQUESTER),)),
        counters={"providers_stored": 1}, stores=(2, 1)),
    Row("add_provider for another peer", KadMessage(T.ADD_PROVIDER, MH_NEW,
                                                    provider_peers=(PeerInfo(OTHER),)),
        counters={"provider_sender_mismatch": 1}),
    Row("add_provider not a multihash", KadMessage(T.ADD_PROVIDER, b"",
                                                   provider_peers=(PeerInfo(REQUESTER),)),
        counters={"bad_keys": 1}),
    Row("get_value stored", KadMessage(T.GET_VALUE, KEY), record=Record(KEY, SEQ5),
        closer=K),
    Row("get_value missing", KadMessage(T.GET_VALUE, b"/colony/name/none"), record=None,
        closer=K),
    Row("put_value newer", KadMessage(T.PUT_VALUE, KEY, Record(KEY, SEQ6)),
        record=Record(KEY, SEQ6), counters={"records_stored": 1}),
    Row("put_value older", KadMessage(T.PUT_VALUE, KEY, Record(KEY, SEQ4)), record=None,
        counters={"record_store_refusals": 1}),
    Row("put_value key mismatch", KadMessage(T.PUT_VALUE, KEY, Record(b"/x", SEQ6)),
        record=None, counters={"records_rejected": 1}),
    Row("put_value without record", KadMessage(T.PUT_VALUE, KEY), record=None,
        counters={"records_rejected": 1}),
    Row("put_value garbage", KadMessage(T.PUT_VALUE, KEY, Record(KEY, b"junk")),
        record=None, counters={"records_rejected": 1}),
    Row("put_value too big", KadMessage(T.PUT_VALUE, KEY, Record(KEY, b"x" * 2000)),
        record=None, counters={"records_rejected": 1}),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_serve(row: Row) -> None:
    st = fresh_state()
    before = st.stats.as_dict()
    out = serve(REQUESTER, row.msg, NOW, st)
    if row.record == "no reply":
        assert out is None
    else:
        assert out is not None
        assert (out.type, out.key) == (row.msg.type, row.msg.key)
        assert out.record == row.record
        assert out.provider_peers == row.providers
        assert len(out.closer_peers) == row.closer
        assert all(p.peer not in (REQUESTER, ME) for p in out.closer_peers)
    moved = {k: v - before[k] for k, v in st.stats.as_dict().items() if v != before[k]}
    assert moved == row.counters
    assert (len(st.providers), len(st.values)) == row.stores


def test_every_message_type_has_a_rule() -> None:
    st = fresh_state()
    for t in MessageType:
        serve(REQUESTER, KadMessage(t, MH_NEW), NOW, st)  # no KeyError


def test_provider_answer_is_capped_and_lists_stored_providers_first() -> None:
    st = fresh_state()
    for i in (7, 8):
        st.providers.add(MH_OURS, pid(i), (), 0.0)
    out = serve(REQUESTER, KadMessage(T.GET_PROVIDERS, MH_OURS), NOW, st)
    assert out is not None
    # two stored records fill max_providers_per_answer = 2: we are not added; the
    # freshest announcement comes first
    assert [p.peer for p in out.provider_peers] == [pid(8), pid(7)]
