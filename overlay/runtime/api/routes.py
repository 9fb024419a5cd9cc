"""Control-API routes of the daemon: thin translations to node commands and queries.

Long operations (publish, fetch) stream NDJSON progress objects and end with one
object carrying `"done": true`; errors come back as `{"error": …}` with a status.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio

from dht.api import FindNode, GetProviders, GetValue, Provide, PutValue
from dht.records import make_name_record, name_key
from gossip.events import SendUserEvent
from overlay.core.errors import ColonyError
from overlay.core.ids import PeerId
from overlay.runtime.api.metrics import StatsCollector, render
from overlay.runtime.api.routes_capsules import add_capsule_routes
from overlay.runtime.api.routes_doctor import DoctorSources, add_doctor_routes
from overlay.runtime.api.server import ApiError, ApiServer, Request, Response
from overlay.runtime.services.interim_context import dag_multihashes
from overlay.runtime.services.node_builder import str_addrs
from store.cid import Cid
from store.importer import Importer, ImportOptions

if TYPE_CHECKING:
    from overlay.runtime.daemon import Daemon

d_log = structlog.get_logger("colony.api")

PROGRESS_INTERVAL_S = 0.25
#: A fetch with no new block for this long gives up (what it got stays stored).
STALL_TIMEOUT_S = 60.0
MAX_PROVIDERS = 8


def _peer(text: Any) -> PeerId:
    try:
        return PeerId.from_base58(str(text))
    except ColonyError:
        raise ApiError(400, f"not a peer id: {text!r}") from None


def _cid(text: Any) -> Cid:
    try:
        return Cid.parse(str(text))
    except ColonyError as e:
        raise ApiError(400, str(e)) from None


def _event_json(t: float, ev: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"time": round(t, 3), "event": type(ev).__name__}
    for name in getattr(ev, "__slots__", ()):
        v = getattr(ev, name)
        if isinstance(v, PeerId):
            v = str(v)
        elif isinstance(v, bytes):
            v = v.decode("utf-8", "replace") if name == "payload" else v.hex()
        elif not isinstance(v, (int, float, str, bool, type(None))):
            v = str(v)
        out[name] = v
    return out


def _plain(stats: Any) -> dict[str, Any]:
    """A stats object's scalar counters (slotted dataclass or plain object)."""
    if isinstance(stats, dict):  # gossip keeps its counters in a plain dict
        return {k: v for k, v in stats.items() if isinstance(v, (int, float))}
    names = getattr(stats, "__slots__", None) or list(vars(stats))
    return {n: getattr(stats, n) for n in names if isinstance(getattr(stats, n), (int, float))}


async def _provide_quietly(d: Daemon, keys: tuple[bytes, ...]) -> None:
    try:
        await d.dht(lambda rid: Provide(rid, keys), timeout_s=300)
    except ColonyError as e:
        d_log.warning("provide_after_fetch_failed", error=str(e), blocks=len(keys))


def build_api(d: Daemon, token: str) -> ApiServer:
    api = ApiServer(token)
    metrics = _metrics(d)

    async def ident(req: Request) -> Any:
        return {"id": str(d.me), "addrs": d.t.addrs, "api_port": d.api_port}

    async def members(req: Request) -> Any:
        out = []
        for m in d.swim.list_members(include_gone=req.arg("all") == "1"):
            ad = m.ad
            out.append({
                "id": str(m.peer), "state": m.state.name.lower(), "incarnation": m.incarnation,
                "addrs": list(m.addrs),
                "rtt_ms": None if m.rtt_s is None else round(m.rtt_s * 1e3, 2),
                "self": m.is_self,
                "ad": None if ad is None else {
                    "cpu_cores": ad.cpu_cores, "cpu_load": ad.cpu_load,
                    "mem_free_bytes": ad.mem_free_bytes, "disk_free_bytes": ad.disk_free_bytes,
                    "gpus": ad.gpus, "executors": list(ad.executors), "labels": ad.label_map,
                    "reachability": ad.reachability or "unknown",  # issue 10
                },
            })
        return out

    async def peers(req: Request) -> Any:
        return [str(p) for p in d.t.connected_peers()]

    async def findprovs(req: Request) -> Any:
        cid = _cid(req.json().get("cid"))
        ev = await d.dht(lambda rid: GetProviders(rid, cid.multihash))
        return {
            "cid": str(cid), "hops": ev.hops, "error": ev.error,
            "providers": [str(p.peer) for p in ev.result.providers],
        }

    async def findpeer(req: Request) -> Any:
        peer = _peer(req.json().get("peer"))
        ev = await d.dht(lambda rid: FindNode(rid, peer.raw))
        return {"peer": str(peer), "found": peer in ev.result.peers, "hops": ev.hops,
                "closest": [str(p) for p in ev.result.peers]}

    async def dht_put(req: Request) -> Any:
        body = req.json()
        value = str(body.get("value", "")).encode()
        seq = int(body.get("seq") or time.time() * 1000)
        key, record = make_name_record(d.keypair, value, seq, time.time() + 24 * 3600)
        ev = await d.dht(lambda rid: PutValue(rid, key, record))
        return {"key": "/colony/name/" + str(d.me), "seq": seq, "acks": ev.result.acks,
                "error": ev.error}

    async def dht_get(req: Request) -> Any:
        peer = _peer(req.json().get("name"))
        ev = await d.dht(lambda rid: GetValue(rid, name_key(peer)))
        r = ev.result
        return {"name": str(peer), "value": r.payload.decode("utf-8", "replace")
                if r.payload else None, "seq": r.seq, "responses": r.valid_responses,
                "error": ev.error}

    async def publish(req: Request) -> Response:
        body = req.json()
        path = Path(str(body.get("path", "")))
        opts = ImportOptions(cid_version=int(body.get("cid_version", 1)))
        done_bytes = [0]

        def count(n: int) -> None:
            done_bytes[0] += n

        def do_import() -> Any:
            return Importer(d.store, opts, progress=count).add_path(path, recursive=True)

        async def gen() -> AsyncIterator[Any]:
            async with trio.open_nursery() as n:
                result: list[Any] = []

                async def run() -> None:
                    result.append(await trio.to_thread.run_sync(do_import))

                n.start_soon(run)
                while not result:
                    yield {"phase": "import", "bytes": done_bytes[0]}
                    with trio.move_on_after(PROGRESS_INTERVAL_S):
                        while not result:
                            await trio.sleep(0.02)
            added = result[0]
            keys = dag_multihashes(d.store, added.cid)
            yield {"phase": "provide", "blocks": len(keys), "bytes": done_bytes[0]}
            ev = await d.dht(lambda rid: Provide(rid, tuple(keys)), timeout_s=300)
            yield {"done": True, "cid": str(added.cid), "size": added.size, "blocks": len(keys),
                   "provide": {"regions": ev.regions, "lookups": ev.lookups,
                               "messages": ev.messages}}

        return Response(stream=gen())

    async def fetch(req: Request) -> Response:
        body = req.json()
        cid = _cid(body.get("cid"))

        async def gen() -> AsyncIterator[Any]:
            ev = await d.dht(lambda rid: GetProviders(rid, cid.multihash))
            providers = [p.peer for p in ev.result.providers if p.peer != d.me]
            for p in ev.result.providers:
                if p.addrs and p.peer != d.me:
                    d.t.add_addrs(p.peer, str_addrs(p.addrs))
            if not providers:  # ask connected members, as Bitswap broadcasts wants
                providers = [p for p in d.t.connected_peers() if p != d.me]
            providers = providers[:MAX_PROVIDERS]
            if not providers and not d.store.has(cid):
                raise ApiError(404, f"no providers found for {cid} and no peers connected")
            yield {"phase": "providers", "providers": [str(p) for p in providers]}
            session = d.start_fetch(cid, providers)
            last, last_change = -1, trio.current_time()
            while not session.progress.done:
                yield session.progress.as_dict()
                with trio.move_on_after(PROGRESS_INTERVAL_S):
                    while not session.progress.done:
                        await trio.sleep(0.02)
                got = session.progress.blocks_fetched
                if got != last:
                    last, last_change = got, trio.current_time()
                elif trio.current_time() - last_change > STALL_TIMEOUT_S:
                    d.cancel_fetch(session)
                    raise ColonyError(
                        f"fetch of {cid} stalled: no block for {STALL_TIMEOUT_S:.0f} s "
                        f"({session.progress.outstanding} outstanding); run it again to resume"
                    )
            d.writer.flush()
            final = session.progress.as_dict()
            if final["error"]:
                raise ColonyError(str(final["error"]))
            # Like kubo, a node that holds a DAG provides it, so later fetches can
            # spread over every holder. Background: the fetch is already complete.
            keys = tuple(dag_multihashes(d.store, cid))
            d.nursery.start_soon(_provide_quietly, d, keys)
            yield final

        return Response(stream=gen())

    async def stats(req: Request) -> Any:
        return {
            "id": str(d.me),
            "driver": vars(d.driver.stats),
            "dht": d.kad.stats.as_dict(),
            "gossip": _plain(d.swim.stats),
            "exchange": _plain(d.exchange.stats),
            "store": dataclasses.asdict(d.store.stat()),  # slotted: no vars()
            "connected_peers": len(d.t.connected_peers()),
        }

    async def events_send(req: Request) -> Any:
        body = req.json()
        payload = body.get("payload", "")
        data = base64.b64decode(payload) if body.get("base64") else str(payload).encode()
        await d.driver.submit_wait(SendUserEvent(str(body.get("name", "")), data))
        return {"sent": True, "bytes": len(data)}

    async def events_watch(req: Request) -> Response:
        send, recv = trio.open_memory_channel[Any](256)
        d.watchers.append(send)

        async def gen() -> AsyncIterator[Any]:
            try:
                async with recv:
                    async for t, ev in recv:
                        yield _event_json(t, ev)
            finally:
                if send in d.watchers:
                    d.watchers.remove(send)

        return Response(stream=gen())

    async def leave(req: Request) -> Any:
        await d.leave()

        async def stop_after_reply() -> None:
            # Cancelling now would also cancel this very request before its reply is
            # written (the client saw "connection closed"); give the reply a moment.
            await trio.sleep(0.3)
            d.nursery.cancel_scope.cancel()

        d.nursery.start_soon(stop_after_reply)
        return {"left": True}

    async def metrics_route(req: Request) -> Response:
        return Response(raw=render(metrics), content_type="text/plain; version=0.0.4")

    for method, path, fn in [
        ("GET", "/v1/id", ident), ("GET", "/v1/members", members), ("GET", "/v1/peers", peers),
        ("POST", "/v1/dht/findprovs", findprovs), ("POST", "/v1/dht/findpeer", findpeer),
        ("POST", "/v1/dht/put", dht_put), ("POST", "/v1/dht/get", dht_get),
        ("POST", "/v1/publish", publish), ("POST", "/v1/fetch", fetch),
        ("GET", "/v1/stats", stats), ("POST", "/v1/events/send", events_send),
        ("GET", "/v1/events/watch", events_watch), ("POST", "/v1/leave", leave),
        ("GET", "/metrics", metrics_route),
    ]:
        api.add(method, path, fn)
    add_capsule_routes(api, d.capsules, d.keypair, d.blocks)
    add_doctor_routes(api, DoctorSources(
        d.me, d.home, d.conf, d.t, d.membership, d.store, d.reachability,
        lambda: getattr(d, "dialer", None)))  # the edge stack starts after the API
    return api


def _metrics(d: Daemon) -> StatsCollector:
    c = StatsCollector()
    c.gauge("connected_peers", "libp2p peers connected", lambda: len(d.t.connected_peers()))
    c.gauge("members_alive", "live gossip members (self included)",
            lambda: len(d.swim.list_members()))
    c.gauge("dht_routing_table_size", "peers in the Kademlia routing table",
            lambda: len(d.kad.table))
    c.counter("driver_inputs", "inputs handled by the node core", lambda: d.driver.stats.inputs)
    c.counter("driver_inputs_dropped", "inputs dropped: inbox full",
              lambda: d.driver.stats.inputs_dropped)
    c.counter("exchange_blocks_received", "blocks received by bitswap",
              lambda: d.exchange.stats.blocks_received)
    c.counter("exchange_blocks_served", "blocks served by bitswap",
              lambda: d.exchange.stats.blocks_served)
    c.counter("exchange_bytes_received", "block bytes received",
              lambda: d.exchange.stats.bytes_received)
    c.counter("exchange_bytes_served", "block bytes served", lambda: d.exchange.stats.bytes_served)
    c.counter("dht", "DHT core counters", lambda: d.kad.stats.as_dict(), "counter")
    c.gauge("store_blocks", "blocks in the local store", lambda: d.store.stat().blocks)
    return c
