"""`colony daemon`: one trio process running a node (DESIGN §9) — the composition root.

It builds the services, each from the narrow interfaces it uses (context.py), wires
them and runs them in one nursery; it holds no protocol logic. The pieces:

| piece                    | does                                                     |
|--------------------------|----------------------------------------------------------|
| net/transport            | libp2p host: streams, dials, addresses                   |
| driver                   | runs the composed sans-IO node (overlay/node.py)         |
| net/router               | decodes inbound frames for the cores, routes their sends |
| services/events          | fans the cores' events out: services, log, API watchers  |
| services/dht_client      | DHT commands, kad requests in and out                    |
| services/blocks          | fetch sessions, the one DAG fetch, the block writer      |
| services/peer_book       | known peers and peers.json                               |
| services/bootstrap       | joins through seeds, saved peers and mDNS                |
| services/capsules, trust | capsules; colony trust (docs/trust.md)                   |
| services/handlers        | `[handlers]` scripts on member and user events (serf's)  |
| services/topics          | tier-2 topics (HyParView + Plumtree), its own driver     |
| services/cells           | tier-1 cell: start/save, digests through the DHT, moves  |
| edge/dialback, dialer    | reachability; NAT traversal (WebRTC, relay)              |
| api/routes               | the control API                                          |
| gateway/service          | HTTP gateway, if `[gateway] listen` (docs/gateway.md)    |

Persistence: blocks are in LMDB (committed before a publish/fetch is acknowledged);
peers.json is saved by the peer book and at shutdown, so a restarted node finds its
colony without bootstrap flags. SIGINT/SIGTERM leave gracefully (gossip leave intent,
bounded by `LEAVE_TIMEOUT_S`).
"""

from __future__ import annotations

import dataclasses
import random
import signal
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import trio

from dht.api import KadConfig
from gossip.events import Leave, LeftColony
from gossip.profiles import profile
from overlay.capsule.cell_placement import CellPlacer
from overlay.core.crypto import KeyPair
from overlay.node import CellSetup, DhtSetup, GossipSetup, build_node
from overlay.runtime.api.routes import build_api
from overlay.runtime.api.routes_capsules import add_capsule_routes
from overlay.runtime.api.routes_cells import add_cell_routes
from overlay.runtime.api.routes_doctor import DoctorSources, add_doctor_routes
from overlay.runtime.api.routes_grants import add_grant_routes
from overlay.runtime.api.routes_labels import add_label_routes
from overlay.runtime.api.routes_node import CoreStats
from overlay.runtime.api.routes_sync import add_sync_routes
from overlay.runtime.api.routes_topics import add_topic_routes
from overlay.runtime.api.routes_triggers import add_trigger_routes
from overlay.runtime.api.routes_trust import add_trust_routes
from overlay.runtime.api.server import (
    ApiServer,
    load_or_create_token,
    remove_api_addr,
    split_hostport,
    write_api_addr,
)
from overlay.runtime.dashboard.routes import add_dashboard_routes
from overlay.runtime.driver import Driver
from overlay.runtime.edge.dialback import ReachabilityService
from overlay.runtime.edge.stack import run_edge
from overlay.runtime.gateway.service import Gateway, GatewayConfig, TrustPolicy
from overlay.runtime.net.router import Router
from overlay.runtime.net.transport import Transport, TransportConfig
from overlay.runtime.process.config import Config, mdns_enabled
from overlay.runtime.services.aggregate import AggregateService
from overlay.runtime.services.blocks import BlockService
from overlay.runtime.services.bootstrap import Bootstrapper
from overlay.runtime.services.capsules import (
    CAPSULE_MESSAGES,
    CapsuleService,
    CapsuleSetup,
    prepare_capsules,
)
from overlay.runtime.services.cell_forward import CrossCell
from overlay.runtime.services.cells import CellService, cell_config
from overlay.runtime.services.dag_stream import DagStreams
from overlay.runtime.services.dht_client import DhtClient
from overlay.runtime.services.events import EventBus
from overlay.runtime.services.federation import FederationService
from overlay.runtime.services.federation_grantee import Grantee
from overlay.runtime.services.federation_revocations import FederatedRevocations
from overlay.runtime.services.handlers import EventHandlers
from overlay.runtime.services.host_ad import (
    PROTO_BITSWAP,
    PROTO_GOSSIP,
    StoreSource,
    bin_addrs,
    local_ad,
)
from overlay.runtime.services.membership import SwimMembership
from overlay.runtime.services.node_labels import NodeLabels
from overlay.runtime.services.peer_book import PeerBook
from overlay.runtime.services.sync import RunSync, SyncService
from overlay.runtime.services.topics import TopicService
from overlay.runtime.services.trigger_runs import TriggerRuns
from overlay.runtime.services.trust import TrustService
from overlay.runtime.services.trust_state import Trust, colony_id
from store.blockstore import BlockStore
from store.importer import ImportOptions

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("colony.daemon")

LEAVE_TIMEOUT_S = 3.0


class Daemon:
    def __init__(
        self, home: Path, conf: Config, keypair: KeyPair, store: BlockStore
    ) -> None:
        self.home = home
        self.conf = conf
        self.keypair = keypair
        self.store = store
        self.me = keypair.peer_id
        self._left = trio.Event()
        self.api_port: int | None = None
        #: The trustless HTTP gateway's port, when `[gateway] listen` is set.
        self.gateway_port: int | None = None
        self.started = trio.Event()
        #: Colony membership (no colony configured: open mode). docs/trust.md
        self.trust = Trust(home, conf)

    async def run(self, task_status: TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED) -> None:
        tcfg = TransportConfig.from_config(self.conf)
        async with Transport.open(self.keypair, self.conf["network"]["listen"], tcfg) as t:
            self.t = t
            addrs = tuple(t.listen_addrs)
            # One revocation list: those learned by gossip also bind capsule submitters.
            caps = await prepare_capsules(self.home, self.conf, self.keypair,
                                          self.trust.revocations)
            gconf, dconf = self.conf["gossip"], self.conf["dht"]
            built = build_node(
                self.keypair, random.Random(),
                gossip=GossipSetup(
                    profile(gconf["profile"]), ad=local_ad(self.home, **caps.ad_fields()),
                    addrs=addrs, admission=self.trust.admission,  # colony mode: trust_state.py
                    chain=self.trust.chain_envelopes,
                ),
                dht=DhtSetup(KadConfig(mode=dconf["mode"], k=dconf["k"], alpha=dconf["alpha"]),
                             addrs=bin_addrs(addrs)),
                blocks=StoreSource(self.store), capsule=caps.core,
                cells=CellSetup(cell_config(self.conf["cell"]), site=self.conf["cell"]["site"]),
            )
            assert built.swim is not None and built.kad is not None
            assert built.exchange is not None
            self.node, self.swim, self.kad, self.exchange = (
                built.node, built.swim, built.kad, built.exchange)  # fmt: skip
            api = self._wire(t, caps)
            host, port = split_hostport(self.conf["api"]["listen"])
            async with trio.open_nursery() as n:
                self.nursery = n
                await n.start(self.driver.run)
                await n.start(self.topics.driver.run)  # the tier-2 overlay's own loop
                n.start_soon(self.topics.run)
                await n.start(self.aggregate.driver.run)  # push-sum totals' own loop
                n.start_soon(self.aggregate.run)
                await self.cells.start()  # gossip in its cell before bootstrap joins anyone
                await self.capsules.restore()  # custody records first (overlay/capsule/durable.py)
                self.api_port = api_port = await n.start(api.serve, host, port)
                write_api_addr(self.home, host, api_port)
                if self.handlers:
                    self.handlers.set_api(f"{host}:{api_port}")
                    n.start_soon(self.handlers.run)
                if self.gateway is not None:  # [gateway] listen: docs/gateway.md
                    ghost, gport = split_hostport(self.gateway.config.listen)
                    self.gateway_port = await n.start(self.gateway.serve, ghost, gport)
                    log.info("gateway_started", addr=f"{ghost}:{self.gateway_port}")
                # Edge stack: WebRTC signalling, relay, dialer (overlay/runtime/edge/dialer.py).
                self.dialer = await n.start(partial(
                    run_edge, t, self.keypair, self.conf, trust=self.trust,
                    membership=self.membership, reachability=self.reachability))
                n.start_soon(self.router.watch_transport, self.dialer)
                n.start_soon(self.blocks.flush_tick)
                n.start_soon(self.blocks.writer.run)  # commits fetched blocks off the loop
                n.start_soon(self.peer_book.save_tick)
                n.start_soon(self.reachability.run)
                n.start_soon(self.federation.run)  # grantees' sessions vs their revocations
                n.start_soon(self.fed_revocations.run_publisher)  # this colony's, for others
                if self.capsules.core.executor.config.slots > 0:  # offer to grantors (execute)
                    n.start_soon(self.grantee.offer_loop, self.capsules.core.executor.ad)
                n.start_soon(self._signals, n.cancel_scope)
                await self.bootstrapper.bootstrap(
                    list(self.conf["network"]["bootstrap"]) + self.trust.bootstrap)
                n.start_soon(self.cells.run)  # digests through the DHT; joiners pick a cell
                if mdns_enabled(self.conf):  # LAN discovery, `[discovery] mdns`
                    n.start_soon(self.bootstrapper.run_mdns, lambda: list(t.addrs))
                log.info("daemon_started", peer=str(self.me), addrs=t.addrs, api=self.api_port)
                self.started.set()
                task_status.started(self)
        remove_api_addr(self.home)
        self.blocks.writer.flush()
        self.peer_book.save()

    def _wire(self, t: Transport, caps: CapsuleSetup) -> ApiServer:
        """Build the services on the transport and the node; return the control API."""
        # The driver hands sends to the router and events to the bus, which both hand
        # inputs back to the driver: the cycle is closed by binding late.
        self.driver = driver = Driver(
            self.node, send=lambda peer, msg: self.router.send(peer, msg),
            emit=lambda ev: self.events.publish(ev), disconnect=t.disconnect_soon,
        )
        self.events = EventBus(driver.now, self.conf["node"]["event_log"])
        self.dht_client = DhtClient(driver, t, self.spawn, protocol=self.conf["dht"]["protocol"],
                                    rpc_timeout_s=self.kad.config.rpc_timeout_s,
                                    serving=self.kad.serving, remote_ip=t.remote_ip,
                                    identify=t.identify)
        self.blocks = BlockService(self.store, driver, t, self.dht_client, self.me)
        self.dag_streams = DagStreams(t, self.store, self.blocks.writer)  # bulk, members
        self.blocks.streams = self.dag_streams
        self.blocks.provider_search = self.dht_client.providers  # late providers join
        self.peer_book = PeerBook(self.home, self.me, t, self.kad, driver.now,
                                  max_known_peers=self.conf["node"]["max_known_peers"])
        self.membership = SwimMembership(self.swim)
        self.handlers = EventHandlers.from_config(
            self.conf["handlers"], home=self.home, self_id=self.me, membership=self.membership)
        self.bootstrapper = Bootstrapper(
            self.me, t.connect, driver, self.membership, self.peer_book, self.spawn)
        self.capsules = CapsuleService(
            caps, cores=driver, network=t, membership=self.membership, dht=self.dht_client,
            blocks=self.blocks, started=self.started, spawn=self.spawn, home=self.home,
            conf=self.conf)
        self.node_labels = NodeLabels(self.home, caps.executor.labels, driver, self.membership)
        self.trust_service = TrustService(
            self.trust, me=self.me, store=self.store, membership=self.membership,
            cores=driver, dht=self.dht_client, keypair=self.keypair, network=t)
        # Grants between colonies (docs/federation.md): wraps the trust service's fetch
        # hook and Bitswap filter with the grantees' sessions.
        # B's revocations reach A through B's list in the DHT (federation_revocations.py).
        self.fed_revocations = FederatedRevocations(
            self.trust, keypair=self.keypair, dht=self.dht_client,
            recheck_s=float(self.conf["federation"]["recheck_s"]))
        self.federation = FederationService(
            self.trust_service, keypair=self.keypair, network=t, membership=self.membership,
            dht=self.dht_client, capsules=self.capsules, revocations=self.fed_revocations,
            guest_executors=bool(self.conf["federation"]["guest_executors"]))
        self.grantee = Grantee(self.trust_service, keypair=self.keypair, network=t,
                               dht=self.dht_client)
        self.federation.proved_to = self.grantee.proved_to
        self.federation.hosted_by = self.grantee.is_host  # its own capsules' outputs here
        # Guest executors (docs/federation.md, execute): at A, an executor's messages
        # from a current guest; at B, custody's messages from a node that took us.
        fed, grantee = self.federation, self.grantee
        self.capsules.guest_ok = lambda p, m: fed.guest_message_ok(p, m) or grantee.host_ok(p, m)
        self.triggers = TriggerRuns(driver, self.spawn, self.events.recent)
        self.capsules.triggers = self.triggers  # a trigger's lease fires, not executes
        self.blocks.hooks = self.grantee  # private marks travel; we prove ourselves to grantors
        self.dag_streams.may_serve = self.trust_service.may_stream  # outsiders: Bitswap
        self.dag_streams.register()
        self.capsules.mark_outputs = self.trust_service.mark_outputs
        self.topics = TopicService(self.keypair, self.trust, t, self.dht_client, driver,
                                   self.conf["topics"])
        self.topics.register()  # /colony/topics/1.0.0
        self.triggers.topics = self.topics  # topic triggers follow their topic
        self.handlers.topics = self.topics  # so do topic:NAME handler scripts
        self.capsules.on_outputs = self.federation.on_outputs  # a grantee reads its outputs
        self.cells = CellService(self.me, self.home, self.conf["cell"], cores=driver, network=t,
                                 membership=self.membership, dht=self.dht_client,
                                 trust=self.trust, spawn=self.spawn)
        self.cells.register()  # /colony/cells/1.0.0: this cell's report
        capsules, trust = self.capsules, self.trust
        self.cross = CrossCell(CellPlacer(random.Random()), self.cells, t, trust,
                               capsules.submit_forwarded, capsules.cancel_forwarded)
        self.cross.register()  # /colony/capsule-forward/1.0.0: capsules of other cells
        capsules.cross = self.cross
        # Status reads from members of other cells that forwarded a capsule here.
        capsules.gate.reads_ok = lambda p: trust.check(p, "member", time.time()) is None
        self.aggregate = AggregateService(self.me, self.membership, t, self.conf["aggregate"],
                                          bridges=self.cells)  # across cells: its publishers
        self.aggregate.register()  # /colony/aggregate/1.0.0: colony-wide totals
        self.router = Router(
            t, driver.submit, self.dht_client, gossip_protocol=PROTO_GOSSIP,
            bitswap_protocol=PROTO_BITSWAP, kad_server=self.kad.config.mode != "client",
            bitswap_filter=self.federation.filter_bitswap,  # members; grantees; outsiders
            routes=[(CAPSULE_MESSAGES, self.capsules.send)],
            listeners=[self.topics.connectivity],  # HyParView's failure signal
            bitswap_admit=self.blocks.writer.wait_room,  # blocks wait for the commit thread
        )
        self.router.register()
        self.capsules.register()
        self.trust_service.register()
        self.federation.register()
        for on_event in (self.capsules.on_event,  # runs, kills, custody persistence
                         self.trust_service.on_event,  # refusal logs, revocations saved
                         self.federation.on_event,  # runs of other colonies' capsules
                         self.fed_revocations.on_event,  # publish this colony's list
                         self.grantee.on_event,  # a guest lease's inputs: proved for
                         self.peer_book.on_event, self.dht_client.on_event,
                         self.blocks.on_event, self.handlers.on_event,
                         self.triggers.on_event, self.cells.on_event, self._on_event):
            self.events.subscribe(on_event)
        self.reachability = ReachabilityService(  # /colony/dialback, STUN
            t, self.membership, driver, me=self.me,
            stun_servers=[str(u) for u in self.conf.get("edge", {}).get("stun", [])])
        self.reachability.register()
        token = load_or_create_token(self.home)
        api = build_api(
            token, keypair=self.keypair, node=self,
            cores=driver, network=t, membership=self.membership, dht=self.dht_client,
            blocks=self.blocks, events=self.events, spawn=self.spawn,
            stats=CoreStats(driver, self.kad, self.swim, self.exchange, self._drops,
                            self.aggregate.totals, self.cells.stats_json,
                            lambda: dataclasses.asdict(self.dag_streams.stats)),
        )
        add_capsule_routes(api, self.capsules, self.keypair, self.blocks)
        add_trigger_routes(api, self.capsules, self.keypair, self.triggers)
        trust = self.trust
        self.sync = SyncService(
            self.dht_client, self.blocks, self.keypair,
            colony=lambda: colony_id(trust.colony_owner) if trust.colony_owner else None,
            chain=lambda: trust.own_chain, state=self.home / "sync.json",
            options=ImportOptions(cid_version=int(self.conf["store"]["cid_version"])))
        add_sync_routes(api, self.sync)  # labels: docs/sync.md
        self.capsules.attempts.ctx.sync = RunSync(self.sync)  # capsules' sync directives
        add_doctor_routes(api, DoctorSources(
            self.me, self.home, self.conf, t, self.membership, self.store, self.reachability,
            lambda: getattr(self, "dialer", None)))  # the dialer starts after the API
        add_trust_routes(api, self.trust_service)
        add_label_routes(api, self.node_labels)
        add_cell_routes(api, self.cells)
        add_topic_routes(api, self.topics)
        add_grant_routes(api, self.federation, self.grantee)
        gconf = GatewayConfig.from_config(self.conf)
        self.gateway = Gateway(self.store, TrustPolicy(self.trust_service), gconf,
                               fetch=self.blocks.fetch_dag) if gconf.listen else None
        add_dashboard_routes(api, token, self.store)  # pages + session cookie, same port
        api.metrics.counter(
            "dht_addrs", "addresses in DHT answers (attached to ours, taken from others', "
            "dropped, capped) and identify of address-less requesters (identify_asked, "
            "_learned, _failed, _skipped)",
            lambda: dataclasses.asdict(self.dht_client.addr_stats))
        if self.gateway is not None:
            api.metrics.counter("gateway", "trustless gateway: requests, bytes_sent, "
                                "streams_broken, busy (503s), refused (blocks), fetched (roots)",
                                self.gateway.stats)
        return api

    def _drops(self) -> dict[str, int]:
        """Every frame, input or event dropped on purpose, by where (/v1/stats "drops").

        Each is recovered from by its protocol (docs/capsules.md "Lost messages").
        """
        t = self.t.stats
        out = {
            "transport.queue_full": t.frames_dropped_queue_full,
            "transport.send_failed": t.frames_dropped_send_failed,
            "transport.events": t.events_dropped,
            "transport.handler_error": t.handler_errors,
            # All inputs the inbox refused; of them, a heavy peer's refused above the
            # high-water mark (the flood's cost to itself, runtime/inbox.py).
            "driver.inbox_full": self.driver.stats.inputs_dropped,
            "driver.inbox_over_share": self.driver.stats.inputs_over_share,
            "router.bitswap_filtered": self.router.bitswap_filtered,
            "router.unroutable": self.router.unroutable,
            "events.slow_watcher": self.events.watcher_drops,
            "exchange.want_queue_full": self.exchange.stats.want_drops,
            "dht.announces_lost": self.dht_client.announces_lost,
            "dht.refused_client_mode": self.dht_client.refused_client,
            # Addresses in DHT answers we could not use (services/dht_addrs.py), and
            # peer addresses the transport refused (not a multiaddr, another peer's).
            "dht.answer_addrs_dropped": self.dht_client.addr_stats.dropped,
            "dht.answer_addrs_capped": self.dht_client.addr_stats.capped,
            "transport.addrs_refused": t.addrs_refused,
            "transport.addrs_expired": self.t.addrs_expired,
            "exchange.want_timeouts": self.exchange.stats.timeouts,
            "dag_stream.failed": self.dag_streams.stats.streams_failed,
            "dag_stream.stalled": self.dag_streams.stats.streams_stalled,
            "dag_stream.bad_blocks": self.dag_streams.stats.bad_blocks,
            "dag_stream.unexpected_blocks": self.dag_streams.stats.unexpected_blocks,
            "dag_stream.refused": self.dag_streams.stats.served_refused,
            "handlers.queue_full": self.handlers.stats.queue_full,
            "handlers.timed_out": self.handlers.stats.timed_out,
            "handlers.topic_refused": self.handlers.stats.topic_refused,
            # Other colonies' revocation lists that did not verify (a forged list).
            "federation.revlists_refused": self.fed_revocations.remote.refused,
        }
        out.update(self.topics.drops())
        out.update(self.aggregate.drops())
        # The peers whose inputs the inbox refused most: who is flooding us.
        for peer, n in self.driver.top_droppers(5):
            out[f"driver.inbox_dropped.{peer}"] = n
        for proto, n in sorted(t.queue_full_by_protocol.items()):
            out[f"transport.queue_full.{proto}"] = n
        # Inbound streams reset for their peer's fault (bad message, bad request, too
        # many streams…): the frames still on them are lost with them.
        for reason, n in sorted(t.streams_dropped.items()):
            out[f"transport.stream_dropped.{reason}"] = n
        for reason, n in sorted(self.t.connection_drops().items()):
            out[f"transport.connection_dropped.{reason}"] = n
        return out

    # ------------------------------------------------------------ lifecycle

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Start a background task in the daemon's nursery (context.Spawn)."""
        self.nursery.start_soon(fn, *args)

    def stop(self) -> None:
        self.nursery.cancel_scope.cancel()

    def _on_event(self, ev: object) -> None:
        if isinstance(ev, LeftColony):
            self._left.set()

    async def _signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
            async for sig in sigs:
                log.info("daemon_stopping", signal=signal.Signals(sig).name)
                await self.leave()
                scope.cancel()
                return

    async def leave(self) -> None:
        """Graceful leave: announce it, wait (bounded) until gossip sent it."""
        if self._left.is_set():
            return
        await self.driver.submit_wait(Leave())
        with trio.move_on_after(LEAVE_TIMEOUT_S):
            await self._left.wait()
        self.blocks.writer.flush()
        self.peer_book.save()
