"""Control-API routes of the DHT: provider and peer lookups, signed name records.

| method, path           | body            | result                                  |
|------------------------|-----------------|-----------------------------------------|
| POST /v1/dht/findprovs | {cid}           | {cid, hops, error, providers}           |
| POST /v1/dht/findpeer  | {peer}          | {peer, found, hops, closest}            |
| POST /v1/dht/put       | {value, seq?}   | {key, seq, acks, error}  (this node's name) |
| POST /v1/dht/get       | {name}          | {name, value, seq, responses, error}    |
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dht.api import (
    ClosestPeers,
    FindNode,
    GetProviders,
    GetValue,
    Providers,
    PutValue,
    Stored,
    Value,
    result_as,
)
from dht.records import make_name_record, name_key
from dht.wire import MAX_VALUE_BYTES
from overlay.runtime.api.openapi import BOOL, INT, STR, RouteDoc, arr, nullable, obj
from overlay.runtime.api.params import cid_arg, int_field, peer_arg
from overlay.runtime.api.server import ApiError, ApiServer, Request

if TYPE_CHECKING:
    from overlay.core.crypto import KeyPair
    from overlay.runtime.context import DhtCalls

#: Lifetime of a name record put through the API.
NAME_RECORD_TTL_S = 24 * 3600


def add_dht_routes(api: ApiServer, dht: DhtCalls, keypair: KeyPair) -> None:
    me = keypair.peer_id

    async def findprovs(req: Request) -> object:
        cid = cid_arg(req.json().get("cid"))
        ev = await dht.call(lambda rid: GetProviders(rid, cid.multihash))
        return {
            "cid": str(cid), "hops": ev.hops, "error": ev.error,
            "providers": [str(p.peer) for p in result_as(ev, Providers).providers],
        }

    async def findpeer(req: Request) -> object:
        peer = peer_arg(req.json().get("peer"))
        ev = await dht.call(lambda rid: FindNode(rid, peer.raw))
        peers = result_as(ev, ClosestPeers).peers
        return {"peer": str(peer), "found": peer in peers, "hops": ev.hops,
                "closest": [str(p) for p in peers]}

    async def dht_put(req: Request) -> object:
        body = req.json()
        value = str(body.get("value", "")).encode()
        seq = int_field(body, "seq", int(time.time() * 1000))
        key, record = make_name_record(keypair, value, seq, time.time() + NAME_RECORD_TTL_S)
        if len(record) > MAX_VALUE_BYTES:
            # Every peer would refuse it as a malformed frame: stored here only, it
            # would look published and reach no one.
            raise ApiError(413, f"value of {len(value)} bytes makes a {len(record)}-byte "
                                f"record; the DHT carries at most {MAX_VALUE_BYTES}")
        ev = await dht.call(lambda rid: PutValue(rid, key, record))
        return {"key": "/colony/name/" + str(me), "seq": seq,
                "acks": result_as(ev, Stored).acks,
                "error": ev.error}

    async def dht_get(req: Request) -> object:
        peer = peer_arg(req.json().get("name"))
        ev = await dht.call(lambda rid: GetValue(rid, name_key(peer)))
        r = result_as(ev, Value)
        return {"name": str(peer), "value": r.payload.decode("utf-8", "replace")
                if r.payload else None, "seq": r.seq, "responses": r.valid_responses,
                "error": ev.error}

    err = nullable(STR)
    api.add("POST", "/v1/dht/findprovs", findprovs, RouteDoc(
        "providers of a CID", tag="dht", body=obj(("cid",), cid=STR),
        response=obj(("cid", "hops", "providers"), cid=STR, hops=INT, error=err,
                     providers=arr(STR))))
    api.add("POST", "/v1/dht/findpeer", findpeer, RouteDoc(
        "look a peer up", tag="dht", body=obj(("peer",), peer=STR),
        response=obj(("peer", "found", "hops"), peer=STR, found=BOOL, hops=INT,
                     closest=arr(STR))))
    api.add("POST", "/v1/dht/put", dht_put, RouteDoc(
        "publish a value under this node's name", tag="dht",
        body=obj((), value=STR, seq=INT),
        response=obj(("key", "seq", "acks"), key=STR, seq=INT, acks=INT, error=err)))
    api.add("POST", "/v1/dht/get", dht_get, RouteDoc(
        "read a node's name record", tag="dht", body=obj(("name",), name=STR),
        response=obj(("name", "value"), name=STR, value=nullable(STR), seq=nullable(INT),
                     responses=INT, error=err)))
