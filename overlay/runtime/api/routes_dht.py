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
from overlay.runtime.api.params import cid_arg, peer_arg
from overlay.runtime.api.server import ApiServer, Request

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
        seq = int(body.get("seq") or time.time() * 1000)
        key, record = make_name_record(keypair, value, seq, time.time() + NAME_RECORD_TTL_S)
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

    api.add("POST", "/v1/dht/findprovs", findprovs)
    api.add("POST", "/v1/dht/findpeer", findpeer)
    api.add("POST", "/v1/dht/put", dht_put)
    api.add("POST", "/v1/dht/get", dht_get)
