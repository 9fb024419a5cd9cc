"""`colony daemon`: one trio process running a node (DESIGN §9).

Structure (one nursery): the libp2p transport; the driver loop owning the composed
node core; the control API; a flush tick for fetched blocks; a state saver. Protocol
handlers only decode and hand inputs to the driver; the send path only encodes and
hands frames to the transport. Everything else is in the cores.

Persistence: blocks are in LMDB (committed before a publish/fetch is acknowledged);
peers' addresses and the member list are saved to `<home>/peers.json` every
`SAVE_INTERVAL_S` and at shutdown, and dialled again at start, so a restarted node
finds its colony without bootstrap flags. SIGINT/SIGTERM leave gracefully (gossip
leave intent, bounded by `LEAVE_TIMEOUT_S`).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import structlog
import trio

from dht.api import AddPeer, Bootstrap, LookupDone, PeerAddressesLearned, ProvideDone
from dht.wire import DhtRequest, DhtResponse, KadMessage, MessageType, PeerInfo
from gossip.events import Join, Leave, LeftColony, MemberJoined
from gossip.messages import MESSAGE_TYPES as GOSSIP_MESSAGES
from gossip.messages import decode_message as decode_gossip
from overlay.core.crypto import KeyPair
from overlay.core.effects import Connected, Disconnected, PeerUnreachable, Received
from overlay.core.errors import ColonyError, RemoteProtocolError, WireError
from overlay.core.ids import PeerId
from overlay.exchange.engine import BlockReceived, BlockUnavailable, CancelFetch, Fetch
from overlay.exchange.messages import BitswapMessage
from overlay.runtime.api.client import split_hostport
from overlay.runtime.api.server import (
    ApiServer,
    load_or_create_token,
    remove_api_addr,
    write_api_addr,
)
from overlay.runtime.driver import Driver
from overlay.runtime.edge.dialback import ReachabilityService
from overlay.runtime.edge.dialer import run_edge
from overlay.runtime.net.transport import (
    Codec,
    PeerConnected,
    PeerDisconnected,
    SendFailed,
    Transport,
    TransportConfig,
    TransportError,
)
from overlay.runtime.services.capsules import CAPSULE_MESSAGES, CapsuleService, prepare_capsules
from overlay.runtime.services.fetch import BlockWriter, FetchSession
from overlay.runtime.services.interim_context import DhtFunction, SessionBlocks, SwimMembership
from overlay.runtime.services.node_builder import (
    PROTO_BITSWAP,
    PROTO_GOSSIP,
    bin_addrs,
    build_node,
    local_ad,
    str_addrs,
)
from overlay.runtime.services.trust import TrustService
from overlay.runtime.services.trust_state import Trust
from store.blockstore import BlockStore
from store.cid import Cid

log = structlog.get_logger("colony.daemon")

PEERS_FILE = "peers.json"
SAVE_INTERVAL_S = 30.0
FLUSH_INTERVAL_S = 0.05
#: Flush tick while no fetch runs: 20 wake-ups/s were ~80 % of an idle daemon's CPU.
IDLE_FLUSH_INTERVAL_S = 1.0
LEAVE_TIMEOUT_S = 3.0
#: Longest wait between bootstrap attempts when no seed answered at start.
BOOTSTRAP_RETRY_MAX_S = 30.0
KAD_SERVE_TIMEOUT_S = 10.0
EVENT_LOG = 1000
#: Peers remembered for the next start (most recently seen kept).
MAX_KNOWN_PEERS = 256
#: Routing-table entries saved in peers.json and PINGed at the next start.
MAX_TABLE_SAVED = 512
#: Routing-table peers also dialled to rejoin gossip when no saved member answers.
MAX_TABLE_DIALS = 16
#: A peer found by mDNS is dialled at most this often (it answers every query).
MDNS_REDIAL_S = 30.0
#: Joins of mDNS-found peers in flight; more answers wait for a later round, so a
#: host flooding the LAN with made-up peers cannot make us dial without bound.
MDNS_MAX_JOINS = 4


class _Waiter:
    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: Any = None


class Daemon:
    def __init__(
        self, home: Path, conf: dict[str, dict[str, Any]], keypair: KeyPair, store: BlockStore
    ) -> None:
        self.home = home
        self.conf = conf
        self.keypair = keypair
        self.store = store
        self.me = keypair.peer_id
        self.kad_proto: str = conf["dht"]["protocol"]
        self.writer = BlockWriter(store)
        self.sessions: dict[bytes, list[FetchSession]] = {}
        self.events: deque[tuple[float, Any]] = deque(
            maxlen=conf["node"]["event_log"])  # [node] event_log (EVENT_LOG by default)
        self.watchers: list[trio.MemorySendChannel[Any]] = []
        self._ids = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._kad_inbound: dict[int, _Waiter] = {}
        self._left = trio.Event()
        #: peer id → addresses, from gossip; survives leave/failure so a restart can
        #: dial back into the colony.
        self.known_peers: dict[str, list[str]] = {}
        self._peers_new = False
        self.api_port: int | None = None
        self.started = trio.Event()
        #: Colony membership (no colony configured: open mode). docs/trust.md
        self.trust = Trust(home, conf)

    # ------------------------------------------------------------ lifecycle

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        net = self.conf["network"]
        tcfg = TransportConfig.from_config(self.conf)
        async with Transport.open(self.keypair, net["listen"], tcfg) as t:
            self.t = t
            addrs = tuple(t.listen_addrs)
            # One revocation list: those learned by gossip also bind capsule submitters.
            caps = await prepare_capsules(self.home, self.conf, self.keypair,
                                          self.trust.revocations)
            self.node, self.swim, self.kad, self.exchange = build_node(
                self.keypair, self.conf, self.store,
                addrs=addrs, addrs_bin=bin_addrs(list(addrs)),
                ad=local_ad(self.home, **caps.ad_fields()), rng=random.Random(),
                capsule=caps.core,
                admission=self.trust.admission, chain=self.trust.chain_envelopes,
            )
            self.driver = Driver(
                self.node, send=self._send, emit=self._on_event, disconnect=t.disconnect_soon
            )
            # Narrow interfaces for the services (overlay/runtime/context.py).
            self.membership = SwimMembership(self.swim)
            self.dht_calls = DhtFunction(self.dht)
            self.blocks = SessionBlocks(self.store, self.writer, me=self.me, dht=self.dht_calls,
                                        network=t, start_fetch=self.start_fetch,
                                        cancel_fetch=self.cancel_fetch)
            self.capsules = CapsuleService(
                caps, cores=self.driver, network=t, membership=self.membership,
                dht=self.dht_calls, blocks=self.blocks, started=self.started,
                spawn=lambda fn, *args: self.nursery.start_soon(fn, *args),
                home=self.home, conf=self.conf)
            self.trust_service = TrustService(
                self.trust, me=self.me, store=self.store, membership=self.membership,
                cores=self.driver, dht=self.dht_calls)
            self._register_handlers()
            self.reachability = ReachabilityService(  # /colony/dialback, STUN
                t, self.membership, self.driver, me=self.me,
                stun_servers=[str(u) for u in self.conf.get("edge", {}).get("stun", [])])
            self.reachability.register()
            token = load_or_create_token(self.home)
            from overlay.runtime.api.routes import build_api

            api: ApiServer = build_api(self, token)
            self.trust_service.add_routes(api)
            host, port = split_hostport(self.conf["api"]["listen"])
            async with trio.open_nursery() as n:
                self.nursery = n
                await n.start(self.driver.run)
                await self.capsules.restore()  # custody records first (overlay/capsule/durable.py)
                self.api_port = await n.start(api.serve, host, port)
                write_api_addr(self.home, host, self.api_port)
                # Edge stack: WebRTC signalling, relay, dialer (overlay/runtime/edge/dialer.py).
                self.dialer = await n.start(partial(
                    run_edge, t, self.keypair, self.conf, trust=self.trust,
                    membership=self.membership, reachability=self.reachability))
                n.start_soon(self._watch_transport)
                n.start_soon(self._flush_tick)
                n.start_soon(self.writer.run)  # commits fetched blocks off the event loop
                n.start_soon(self._save_tick)
                n.start_soon(self.reachability.run)
                n.start_soon(self._signals, n.cancel_scope)
                await self._bootstrap()
                n.start_soon(self._run_mdns)
                log.info("daemon_started", peer=str(self.me), addrs=t.addrs, api=self.api_port)
                self.started.set()
                task_status.started(self)
        remove_api_addr(self.home)
        self.writer.flush()
        self.save_peers()

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
        self.writer.flush()
        self.save_peers()

    async def _bootstrap(self) -> None:
        table = self._saved_table()
        addrs = list(self.conf["network"]["bootstrap"]) + self.trust.bootstrap + self._saved_addrs()
        # Routing-table peers that are not saved members are a second way back in.
        addrs += [a for a in _dial_addrs(table) if a.split("/p2p/")[-1] not in
                  {x.split("/p2p/")[-1] for x in addrs}][:MAX_TABLE_DIALS]
        for info in table:  # each is PINGed; it re-enters the table when it answers
            await self.driver.submit_wait(AddPeer(info.peer, info.addrs))
        if not await self._join_through(addrs) and addrs:
            # Nobody answered (e.g. the seed is starting at the same moment): keep
            # trying in the background, with back-off, until some peer is reached.
            self.nursery.start_soon(self._retry_bootstrap, addrs)

    async def _run_mdns(self) -> None:
        """LAN discovery (`[discovery] mdns`): peers found are joined like bootstrap peers."""
        from overlay.runtime.net.mdns import MdnsService
        from overlay.runtime.process.config import mdns_enabled

        if not mdns_enabled(self.conf):
            return
        tried: dict[str, float] = {}
        joining = [0]

        async def join(addrs: list[str]) -> None:
            try:
                await self._join_through(addrs)
            finally:
                joining[0] -= 1

        def found(peer: str, addrs: list[str]) -> None:
            now = trio.current_time()
            if joining[0] >= MDNS_MAX_JOINS:
                return
            if now - tried.get(peer, -MDNS_REDIAL_S) < MDNS_REDIAL_S:
                return
            if peer in {str(m.peer) for m in self.swim.list_members()}:
                return  # already a member: nothing to join
            tried.pop(peer, None)
            tried[peer] = now
            while len(tried) > MAX_KNOWN_PEERS:  # bounded: a LAN may be noisy
                del tried[next(iter(tried))]
            log.info("mdns_peer_found", peer=peer, addrs=addrs)
            joining[0] += 1
            self.nursery.start_soon(join, addrs[:4])

        self.mdns = MdnsService(str(self.me), lambda: list(self.t.addrs), found)
        try:
            await self.mdns.run()
        except OSError as e:  # no multicast-capable interface, port 5353 refused
            log.warning("mdns_unavailable", error=str(e))

    async def _retry_bootstrap(self, addrs: list[str]) -> None:
        delay = 1.0
        while len(self.swim.list_members()) <= 1:  # alone: only ourselves
            await trio.sleep(delay)
            if len(self.swim.list_members()) > 1 or await self._join_through(addrs):
                return
            delay = min(delay * 2, BOOTSTRAP_RETRY_MAX_S)

    async def _join_through(self, addrs: list[str]) -> bool:
        """Dial `addrs`, join gossip and the DHT through those reached; True if any."""
        seeds: list[PeerId] = []
        infos: list[PeerInfo] = []
        for addr in addrs:
            try:
                with trio.fail_after(10):
                    peer = await self.t.connect(addr)
            except (TransportError, trio.TooSlowError, ColonyError) as e:
                log.warning("bootstrap_dial_failed", addr=addr, error=str(e))
                continue
            if peer != self.me and peer not in seeds:
                seeds.append(peer)
                infos.append(PeerInfo(peer, bin_addrs([addr.split("/p2p/")[0]])))
        await self.driver.submit_wait(Join(tuple(seeds)))
        if infos:
            await self.driver.submit_wait(Bootstrap(tuple(infos)))
        return bool(seeds)

    # ------------------------------------------------------------ persistence

    def _saved_addrs(self) -> list[str]:
        path = self.home / PEERS_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        out = []
        for peer, addrs in data.get("peers", {}).items():
            out.extend(f"{a}/p2p/{peer}" for a in addrs[:2] if "/p2p/" not in a)
        return out[:64]

    def _saved_table(self) -> list[PeerInfo]:
        """The DHT routing table saved by `save_peers` (freshest first); [] if none."""
        try:
            rows = json.loads((self.home / PEERS_FILE).read_text()).get("dht", [])
        except (OSError, ValueError, AttributeError):
            return []
        out: list[PeerInfo] = []
        for row in rows[:MAX_TABLE_SAVED] if isinstance(rows, list) else ():
            try:
                peer = PeerId.from_base58(str(row["id"]))
                addrs = bin_addrs([str(a) for a in row.get("addrs", [])][:4])
            except (ColonyError, KeyError, TypeError, ValueError):
                continue  # a damaged entry costs itself only
            if peer != self.me:
                out.append(PeerInfo(peer, addrs))
        return out

    def _table_rows(self) -> list[dict[str, Any]]:
        rows = []
        for info, age_s in self.kad.table_snapshot(self.driver.now(), MAX_TABLE_SAVED):
            addrs = str_addrs(info.addrs) or self.t.known_addrs(info.peer)
            addrs = [a for a in addrs if "/p2p/" not in a][:4]
            if addrs:  # an entry we could not dial is no use after a restart
                rows.append({"id": str(info.peer), "addrs": addrs,
                             "seen_ago_s": round(age_s, 1)})
        return rows

    def _table_signature(self) -> tuple[int, int, int]:
        st = self.kad.table.stats
        return (len(self.kad.table), st.added, st.evicted)

    def _remember(self, peer: PeerId, addrs: tuple[str, ...]) -> None:
        key = str(peer)
        if self.known_peers.pop(key, None) is None:
            self._peers_new = True  # saved within a second: a crash soon after join
        self.known_peers[key] = list(addrs)[:4]
        while len(self.known_peers) > self.conf["node"]["max_known_peers"]:
            del self.known_peers[next(iter(self.known_peers))]

    def save_peers(self) -> None:
        """Write members and the routing table to peers.json (DESIGN §9)."""
        table = self._table_rows()
        if not self.known_peers and not table:
            return  # never overwrite a useful file with nothing
        tmp = self.home / (PEERS_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"peers": self.known_peers, "dht": table}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())  # the rename below must not expose an empty file
        os.replace(tmp, self.home / PEERS_FILE)  # atomic: a crash leaves old or new

    async def _save_tick(self) -> None:
        last = trio.current_time()
        table = self._table_signature()
        while True:
            await trio.sleep(1.0)
            # Saved within a second of a new member or a routing-table change, so a
            # kill -9 soon after loses at most that second.
            changed = self._table_signature() != table
            if self._peers_new or changed or trio.current_time() - last >= SAVE_INTERVAL_S:
                self._peers_new = False
                last = trio.current_time()
                table = self._table_signature()
                self.save_peers()

    async def _flush_tick(self) -> None:
        while True:
            # Fetched blocks arrive only while a fetch session runs (bench/edge.py).
            await trio.sleep(FLUSH_INTERVAL_S if self.sessions else IDLE_FLUSH_INTERVAL_S)
            self.writer.commit_soon()  # on the writer's thread; acknowledgers flush()

    # ------------------------------------------------------------ inbound

    def _register_handlers(self) -> None:
        t = self.t
        t.set_handler(PROTO_GOSSIP, on_message=self._on_gossip, codec=Codec.CBOR)
        t.set_handler(PROTO_BITSWAP, on_message=self._on_bitswap, codec=Codec.RAW)
        if self.kad.config.mode == "server":
            t.set_handler(self.kad_proto, on_request=self._serve_kad, codec=Codec.RAW)
        else:  # a DHT client only dials kad: it answers no kad requests (docs/dht.md)
            t.codec_for(self.kad_proto, Codec.RAW)
        self.capsules.register()

    def _on_gossip(self, peer: PeerId, obj: Any) -> None:
        try:
            msg = decode_gossip(obj)
        except WireError as e:
            raise RemoteProtocolError(f"bad gossip message: {e}") from None
        self.driver.submit(Received(peer, msg))

    def _on_bitswap(self, peer: PeerId, raw: Any) -> None:
        try:
            msg = BitswapMessage.from_bytes(raw)
        except WireError as e:
            raise RemoteProtocolError(f"bad bitswap message: {e}") from None
        kept = self.trust_service.filter_bitswap(peer, msg)  # colony mode: members-only data
        if kept is None:
            return  # logged by the trust service
        self.driver.submit(Received(peer, kept))

    async def _serve_kad(self, peer: PeerId, raw: Any) -> bytes | None:
        try:
            msg = KadMessage.from_wire(raw)
        except WireError as e:
            raise RemoteProtocolError(f"bad kad message: {e}") from None
        rid = next(self._ids)
        self.driver.submit(Received(peer, DhtRequest(rid, msg)))
        if msg.type == MessageType.ADD_PROVIDER:
            return None  # the kad-dht spec has no answer to ADD_PROVIDER
        w = self._kad_inbound[rid] = _Waiter()
        try:
            with trio.move_on_after(KAD_SERVE_TIMEOUT_S):
                await w.event.wait()
        finally:
            self._kad_inbound.pop(rid, None)
        reply: KadMessage | None = w.value
        return reply.to_wire() if reply is not None else None

    async def _watch_transport(self) -> None:
        async for ev in self.t.events:
            # Connectivity reaches the cores as inputs (the capsule part tracks it). A
            # connection re-made at once (py-libp2p does that) is no disconnection.
            if isinstance(ev, PeerConnected):
                self.driver.submit(Connected(ev.peer))
            elif isinstance(ev, PeerDisconnected) and not self.t.is_connected(ev.peer):
                self.driver.submit(Disconnected(ev.peer))
            if isinstance(ev, (PeerDisconnected, SendFailed)):
                self.driver.submit(PeerUnreachable(ev.peer))
            # A peer we cannot dial may be NAT'd: try WebRTC, then a relay, in the
            # background; the next frames then use that connection.
            if isinstance(ev, SendFailed) and ev.reason.startswith("dial_failed"):
                self.dialer.ensure_soon(ev.peer)
            elif isinstance(ev, PeerDisconnected):
                self.dialer.forget(ev.peer)

    # ------------------------------------------------------------ outbound

    def _send(self, peer: PeerId, msg: Any) -> None:
        if isinstance(msg, GOSSIP_MESSAGES):
            self.t.post(peer, PROTO_GOSSIP, msg.to_wire())
        elif isinstance(msg, BitswapMessage):
            self.t.post(peer, PROTO_BITSWAP, msg.to_bytes())
        elif isinstance(msg, DhtResponse):
            w = self._kad_inbound.get(msg.rid)
            if w is not None:
                w.value = msg.msg
                w.event.set()
        elif isinstance(msg, DhtRequest):
            if msg.msg.type == MessageType.ADD_PROVIDER:
                self.t.post(peer, self.kad_proto, msg.msg.to_wire())
            else:
                self.nursery.start_soon(self._kad_request, peer, msg)
        elif isinstance(msg, CAPSULE_MESSAGES):
            self.capsules.send(peer, msg)
        else:
            log.error("unroutable_message", type=type(msg).__name__)

    async def _kad_request(self, peer: PeerId, req: DhtRequest) -> None:
        try:
            raw = await self.t.request(
                peer, self.kad_proto, req.msg.to_wire(), timeout=self.kad.config.rpc_timeout_s
            )
            reply = KadMessage.from_wire(raw)
        except (TransportError, WireError) as e:
            log.debug("kad_request_failed", peer=str(peer), error=str(e))
            self.driver.submit(PeerUnreachable(peer))
            return
        self.driver.submit(Received(peer, DhtResponse(req.rid, reply)))

    # ------------------------------------------------------------ events

    def _on_event(self, ev: Any) -> None:
        self.capsules.on_event(ev)  # runs, kills, custody persistence, API waiters
        self.trust_service.on_event(ev)  # refusal logs, revocations saved
        if isinstance(ev, MemberJoined) and ev.addrs:
            self.t.add_addrs(ev.peer, ev.addrs)
            self._remember(ev.peer, ev.addrs)
        elif isinstance(ev, PeerAddressesLearned):
            addrs = str_addrs(ev.addrs)
            if addrs and ev.peer != self.me:
                self.t.add_addrs(ev.peer, addrs)
            return  # frequent and uninteresting to watchers
        elif isinstance(ev, (LookupDone, ProvideDone)):
            w = self._waiters.pop(ev.request_id, None)
            if w is not None:
                w.value = ev
                w.event.set()
        elif isinstance(ev, BlockReceived):
            for s in self.sessions.get(ev.cid, ()):
                s.on_block(ev.cid, ev.data, ev.peer)
            self.sessions.pop(ev.cid, None)
            return
        elif isinstance(ev, BlockUnavailable):
            for s in self.sessions.pop(ev.cid, ()):
                s.on_unavailable(ev.cid, ev.reason)
        elif isinstance(ev, LeftColony):
            self._left.set()
        now = self.driver.now()
        self.events.append((now, ev))
        for ch in list(self.watchers):
            try:
                ch.send_nowait((now, ev))
            except trio.WouldBlock:
                pass  # a slow watcher misses events rather than stalling the node
            except trio.ClosedResourceError:
                self.watchers.remove(ch)

    # ------------------------------------------------------------ services for the API

    async def dht(self, make: Callable[[int], Any], timeout_s: float = 60.0) -> Any:
        """Run a DHT command built with a fresh request id; return its result event."""
        rid = next(self._ids)
        w = self._waiters[rid] = _Waiter()
        await self.driver.submit_wait(make(rid))
        try:
            with trio.fail_after(timeout_s):
                await w.event.wait()
        except trio.TooSlowError:
            raise ColonyError(f"DHT operation timed out after {timeout_s:.0f} s") from None
        finally:
            self._waiters.pop(rid, None)
        return w.value

    def start_fetch(self, root: Cid, providers: list[PeerId]) -> FetchSession:
        def want(cids: list[bytes]) -> None:
            for c in cids:
                self.sessions.setdefault(c, []).append(session)
            self.driver.handle_now(Fetch(tuple(cids), tuple(providers)))

        session = FetchSession(root, self.writer, want)
        session.start()
        return session

    def cancel_fetch(self, session: FetchSession) -> None:
        orphaned = []
        for c in session.outstanding:
            waiting = self.sessions.get(c, [])
            if session in waiting:
                waiting.remove(session)
            if not waiting:
                self.sessions.pop(c, None)
                orphaned.append(c)  # no other fetch wants it: withdraw the want
        self.driver.handle_now(CancelFetch(tuple(orphaned)))
        self.writer.flush()


def _dial_addrs(infos: list[PeerInfo]) -> list[str]:
    """`…/p2p/<id>` dial strings for saved routing-table peers (first address each)."""
    out = []
    for info in infos:
        addrs = str_addrs(info.addrs)
        if addrs:
            out.append(f"{addrs[0]}/p2p/{info.peer}")
    return out
