"""Control-API routes about the node itself: identity, members, peers, stats, leave,
Prometheus metrics.

| method, path      | result                                                    |
|-------------------|-----------------------------------------------------------|
| GET  /v1/id       | {id, addrs, api_port}                                     |
| GET  /v1/members  | [{id, state, incarnation, addrs, rtt_ms, self, coord, ad}] (?all=1) |
| GET  /v1/peers    | [peer id] connected                                       |
| GET  /v1/stats    | {id, driver, dht, gossip, exchange, drops, store, connected_peers, |
|                   |  colony, cells, dag_stream}                                |
| POST /v1/leave    | {left: true}; the daemon stops a moment later             |
| GET  /metrics     | Prometheus text                                           |

Stats are read through `CoreStats`, a read-only window on the cores' counters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from overlay.core.errors import ColonyError
from overlay.runtime.api.metrics import StatsCollector, render
from overlay.runtime.api.openapi import (
    ANY,
    BOOL,
    INT,
    NUM,
    OBJ,
    STR,
    RouteDoc,
    arr,
    nullable,
    obj,
)
from overlay.runtime.api.server import ApiError, ApiServer, Request, Response
from overlay.runtime.net.transport_types import split_p2p_addr

if TYPE_CHECKING:
    from collections.abc import Callable

    from dht.core import Kademlia
    from gossip.members import MemberInfo
    from gossip.swim import Swim
    from overlay.core.ids import PeerId
    from overlay.exchange.engine import Exchange, ExchangeStats
    from overlay.runtime.context import Membership, Network, Spawn
    from overlay.runtime.driver import Driver, DriverStats
    from store.blockstore import BlockStore

#: Time the reply to /v1/leave gets before the daemon stops.
LEAVE_REPLY_S = 0.3
MEMBER = obj(
    ("id", "state", "incarnation", "addrs", "rtt_ms", "self", "ad"),
    id=STR, state={"enum": ["alive", "suspect", "dead", "left"]}, incarnation=INT,
    addrs=arr(STR), rtt_ms=nullable(NUM), self=BOOL, ad=nullable(OBJ),
    coord=nullable(obj(("vec", "height_ms", "error"), vec=arr(NUM), height_ms=NUM, error=NUM)),
)
#: How long `POST /v1/connect` waits for the dial and handshakes.
CONNECT_TIMEOUT_S = 30.0


class Lifecycle(Protocol):
    """What the node routes may do to the daemon: read its API port, leave, stop."""

    api_port: int | None

    async def leave(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CoreStats:
    """Read-only access to the cores' counters, for /v1/stats and /metrics."""

    driver: Driver
    kad: Kademlia
    swim: Swim
    exchange: Exchange
    #: Every counter of frames, messages or events dropped on purpose, by name.
    drops: Callable[[], dict[str, int]] = dict
    #: Colony-wide totals (services/aggregate.py), shown as /v1/stats "colony".
    colony: Callable[[], dict[str, object]] = dict
    #: Tier-1 cells (services/cells.py), shown as /v1/stats "cells".
    cells: Callable[[], dict[str, object]] = dict
    #: The bulk DAG stream's counters (services/dag_stream.py), /v1/stats "dag_stream":
    #: served and fetched blocks, ranges stolen for late or idle providers, streams cut.
    dag_stream: Callable[[], dict[str, object]] = dict

    def driver_stats(self) -> DriverStats:
        return self.driver.stats

    def dht_counters(self) -> dict[str, float | int]:
        out: dict[str, float | int] = dict(self.kad.stats.as_dict())
        return out

    def dht_table_size(self) -> int:
        return len(self.kad.table)

    def gossip_stats(self) -> object:
        return self.swim.stats

    def exchange_stats(self) -> ExchangeStats:
        return self.exchange.stats


def _plain(stats: object) -> dict[str, float | int]:
    """A stats object's scalar counters (slotted dataclass or plain object)."""
    if isinstance(stats, dict):  # gossip keeps its counters in a plain dict
        return {k: v for k, v in stats.items() if isinstance(v, (int, float))}
    names = getattr(stats, "__slots__", None) or list(vars(stats))
    return {n: getattr(stats, n) for n in names if isinstance(getattr(stats, n), (int, float))}


def _member_json(m: MemberInfo) -> dict[str, object]:
    ad = m.ad
    return {
        "id": str(m.peer), "state": m.state.name.lower(), "incarnation": m.incarnation,
        "addrs": list(m.addrs),
        "rtt_ms": None if m.rtt_s is None else round(m.rtt_s * 1e3, 2),
        "self": m.is_self,
        # Vivaldi network coordinate (gossip/coordinates.py), in milliseconds.
        "coord": None if m.coord is None else {
            "vec": [round(x * 1e3, 3) for x in m.coord.vec],
            "height_ms": round(m.coord.height * 1e3, 3), "error": round(m.coord.error, 3)},
        "ad": None if ad is None else {
            "cpu_cores": ad.cpu_cores, "cpu_load": ad.cpu_load,
            "mem_free_bytes": ad.mem_free_bytes, "disk_free_bytes": ad.disk_free_bytes,
            "gpus": ad.gpus, "executors": list(ad.executors), "labels": ad.label_map,
            "reachability": ad.reachability or "unknown",
        },
    }


def add_node_routes(
    api: ApiServer, me: PeerId, node: Lifecycle, network: Network, membership: Membership,
    store: BlockStore, stats: CoreStats, spawn: Spawn,
) -> None:
    metrics = _metrics(api.metrics, network, membership, store, stats)

    async def ident(req: Request) -> object:
        return {"id": str(me), "addrs": network.addrs, "api_port": node.api_port}

    async def members(req: Request) -> object:
        return [_member_json(m)
                for m in membership.list_members(include_gone=req.arg("all") == "1")]

    async def peers(req: Request) -> object:
        return [str(p) for p in network.connected_peers()]

    async def connect(req: Request) -> object:
        """Dial a multiaddr ending in /p2p/PEER now (kubo's `swarm connect`)."""
        addr = req.json().get("addr")
        try:
            split_p2p_addr(str(addr))  # a malformed address is the caller's error: 400
        except ColonyError as e:
            raise ApiError(400, str(e)) from None
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                peer = await network.connect(addr)
        except (ColonyError, OSError, trio.TooSlowError) as e:
            raise ApiError(502, f"cannot connect to {addr}: {e or 'timed out'}",
                           code="dial_failed") from None
        return {"id": str(peer), "addr": addr, "connected": network.is_connected(peer)}

    async def stats_route(req: Request) -> object:
        return {
            "id": str(me),
            "driver": vars(stats.driver_stats()),
            "dht": stats.dht_counters(),
            "gossip": _plain(stats.gossip_stats()),
            "exchange": _plain(stats.exchange_stats()),
            "drops": stats.drops(),
            "store": dataclasses.asdict(store.stat()),  # slotted: no vars()
            "connected_peers": len(network.connected_peers()),
            "colony": stats.colony(),
            "cells": stats.cells(),
            "dag_stream": stats.dag_stream(),
        }

    async def leave(req: Request) -> object:
        await node.leave()

        async def stop_after_reply() -> None:
            # Cancelling now would also cancel this very request before its reply is
            # written (the client saw "connection closed"); give the reply a moment.
            await trio.sleep(LEAVE_REPLY_S)
            node.stop()

        spawn(stop_after_reply)
        return {"left": True}

    async def metrics_route(req: Request) -> Response:
        return Response(raw=render(metrics), content_type="text/plain; version=0.0.4")

    api.add("GET", "/v1/id", ident, RouteDoc(
        "this node's peer id, listen addresses and API port", tag="node",
        response=obj(("id", "addrs"), id=STR, addrs=arr(STR), api_port=nullable(INT))))
    api.add("GET", "/v1/members", members, RouteDoc(
        "colony members in this node's gossip view", tag="node",
        query={"all": {"enum": ["1", "0"]}}, response=arr(MEMBER)))
    api.add("GET", "/v1/peers", peers, RouteDoc(
        "peers with an open libp2p connection", tag="node", response=arr(STR)))
    api.add("POST", "/v1/connect", connect, RouteDoc(
        "dial a multiaddr ending in /p2p/PEER (kubo's swarm connect)", tag="node",
        body=obj(("addr",), addr=STR),
        response=obj(("id", "addr", "connected"), id=STR, addr=STR, connected=BOOL)))
    api.add("GET", "/v1/stats", stats_route, RouteDoc(
        "counters of the driver, DHT, gossip, exchange, drops and store; colony-wide "
        "totals by push-sum (colony); this node's cell and the cells known (cells); the "
        "bulk DAG stream's blocks, steals and cut streams (dag_stream)",
        tag="node",
        response=obj(("id", "driver", "dht", "gossip", "exchange", "drops", "store"),
                     id=STR, driver=OBJ, dht=OBJ, gossip=OBJ, exchange=OBJ, drops=OBJ,
                     store=OBJ, connected_peers=INT, colony=OBJ, cells=OBJ,
                     dag_stream=OBJ)))
    api.add("POST", "/v1/leave", leave, RouteDoc(
        "leave the colony gracefully and stop the daemon", tag="node",
        response=obj(("left",), left=BOOL)))
    api.add("GET", "/metrics", metrics_route, RouteDoc(
        "Prometheus metrics (no token needed)", tag="node", response=ANY))


def _metrics(
    c: StatsCollector, network: Network, membership: Membership, store: BlockStore,
    stats: CoreStats,
) -> StatsCollector:
    c.gauge("connected_peers", "libp2p peers connected", lambda: len(network.connected_peers()))
    c.gauge("members_alive", "live gossip members (self included)",
            lambda: len(membership.list_members()))
    c.gauge("dht_routing_table_size", "peers in the Kademlia routing table",
            stats.dht_table_size)
    c.counter("driver_inputs", "inputs handled by the node core",
              lambda: stats.driver_stats().inputs)
    c.counter("driver_inputs_dropped", "inputs dropped: inbox full",
              lambda: stats.driver_stats().inputs_dropped)
    c.counter("driver_inputs_over_share", "of the inputs dropped, a heavy peer's frames "
              "refused above the inbox's high-water mark",
              lambda: stats.driver_stats().inputs_over_share)
    c.counter("exchange_blocks_received", "blocks received by bitswap",
              lambda: stats.exchange_stats().blocks_received)
    c.counter("exchange_blocks_served", "blocks served by bitswap",
              lambda: stats.exchange_stats().blocks_served)
    c.counter("exchange_bytes_received", "block bytes received",
              lambda: stats.exchange_stats().bytes_received)
    c.counter("exchange_bytes_served", "block bytes served",
              lambda: stats.exchange_stats().bytes_served)
    c.counter("dht", "DHT core counters", stats.dht_counters, "counter")
    c.gauge("store_blocks", "blocks in the local store", lambda: store.stat().blocks)
    return c
