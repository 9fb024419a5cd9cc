"""Providing: the `Provide` command, the 22 h reprovide cycle, and running sweeps.

A provide announces keys with batched "sweeps" (kubo's sweeping reprovider; docs/
dht.md, "Sweep"): keys are grouped into key regions (dht/providers.py has the maths,
dht/sweep.py a sweep's plan); each region is explored with one lookup per half that
holds keys, and each key's ADD_PROVIDER goes to its k closest peers among those found.
A first announcement starts every region at once; the reprovide cycle (timer
("reprovide",), every `reprovide_interval_s`) spreads them over the interval when
`pace_reprovide` is set.

Invariants: at most `sweep_parallelism` region lookups per sweep, and a region starts
only while the core has room for two more lookups (`max_lookups`); a sweep that had to
wait retries when one of its lookups ends, or by its ("sweep", id) timer. A sweep ends
(`ProvideDone`) once every region has been explored. At most `max_provided_keys` keys
are provided; more are refused and counted.
"""

from __future__ import annotations

from dht import providers as prov
from dht.api import KadConfig, Provide, ProvideDone
from dht.lookup_runner import LookupRunner
from dht.ops import RegionOp
from dht.routing_table import RoutingTable
from dht.stats import DhtStats
from dht.sweep import Region, Sweep
from dht.wire import DhtRequest, KadMessage, MessageType, PeerInfo
from overlay.core.effects import CancelTimer, Effect, Emit, Send, SetTimer
from overlay.core.errors import LocalProtocolError
from overlay.core.ids import PeerId, key_of_bytes


class Reprovider:
    """The keys we provide, the sweeps announcing them, and the reprovide timer."""

    __slots__ = ("addrs", "config", "cycle_at", "lookups", "me", "provided", "stats",
                 "sweeps", "table")

    def __init__(self, me: PeerId, addrs: tuple[bytes, ...], config: KadConfig, *,
                 table: RoutingTable, lookups: LookupRunner, stats: DhtStats,
                 provided: dict[bytes, int]) -> None:
        self.me = me
        self.addrs = addrs
        self.config = config
        self.table = table
        self.lookups = lookups
        self.stats = stats
        #: multihash → dht key of what we provide (shared with the core, which answers
        #: GET_PROVIDERS from it); bounded by max_provided_keys.
        self.provided = provided
        self.sweeps: dict[int, Sweep] = {}
        #: Deadline of the ("reprovide",) timer once armed, to recognise stale firings.
        self.cycle_at: float | None = None

    # ------------------------------------------------------------ inputs

    def provide(self, cmd: Provide, now: float, out: list[Effect]) -> None:
        keys: dict[bytes, int] = {}
        for mh in cmd.keys:
            if not prov.is_provider_key(mh):
                raise LocalProtocolError("Provide keys must be multihashes")
            if mh not in self.provided and len(self.provided) >= self.config.max_provided_keys:
                self.stats.provided_keys_refused += 1
                continue
            key = self.provided.get(mh)
            if key is None:
                key = self.provided[mh] = key_of_bytes(mh)
            keys[mh] = key
        if self.cycle_at is None:
            self._arm_cycle(now + self.config.reprovide_interval_s, out)
        self._join_paced_sweeps(keys)
        self._sweep(cmd.request_id, keys, now, out)

    def on_cycle_timer(self, now: float, out: list[Effect]) -> None:
        """("reprovide",) fired: start a new cycle over every key we provide."""
        if self.cycle_at is None or now < self.cycle_at:
            return  # stale
        cfg = self.config
        self._arm_cycle(now + cfg.reprovide_interval_s, out)
        self._retire_paced_sweeps(now, out)
        if self.provided:
            spread = cfg.reprovide_interval_s if cfg.pace_reprovide else 0.0
            self._sweep(0, dict(self.provided), now, out, spread_s=spread)

    def on_sweep_timer(self, sid: int, now: float, out: list[Effect]) -> None:
        """("sweep", sid) fired: start the regions that are due."""
        sw = self.sweeps.get(sid)
        if sw is not None and sw.timer_at is not None and now >= sw.timer_at:
            sw.timer_at = None
            self._pump(sid, now, out)

    def _arm_cycle(self, at: float, out: list[Effect]) -> None:
        self.cycle_at = at
        out.append(SetTimer(("reprovide",), at))

    # ------------------------------------------------------------ sweeps

    def _join_paced_sweeps(self, keys: dict[bytes, int]) -> None:
        """Add newly provided keys to the reprovide under way when their region has not
        started yet, so none waits almost two intervals for its first reprovide."""
        for sw in self.sweeps.values():
            sw.add_keys(keys)

    def _sweep(self, request_id: int, keys: dict[bytes, int], now: float,
               out: list[Effect], *, spread_s: float = 0.0) -> None:
        """Announce `keys` region by region, spread over `spread_s` (dht/sweep.py)."""
        bits = prov.region_bits(self.table.estimate_network_size(), self.config.k,
                                self.config.region_peers_per_k)
        sid = self.lookups.new_id()
        self.sweeps[sid] = Sweep(request_id, keys, bits, now, spread_s)
        self._pump(sid, now, out)

    def _retire_paced_sweeps(self, now: float, out: list[Effect]) -> None:
        """A new reprovide cycle covers every key: regions of the last one that never
        started (the node was too busy) are dropped, running lookups finish."""
        for sid, sw in list(self.sweeps.items()):
            if sw.paced and sw.queue:
                sw.retire()
                self._pump(sid, now, out)

    def _pump(self, sid: int, now: float, out: list[Effect]) -> None:
        """Start due regions while under `sweep_parallelism` lookups; arm the sweep's
        timer for the next region that is not due yet."""
        sw = self.sweeps[sid]
        cfg = self.config
        busy = False
        while sw.running < cfg.sweep_parallelism:
            start = sw.next_start()
            if start is None or start > now:
                break
            if len(self.lookups) + 2 > cfg.max_lookups:
                busy = True  # retried when a lookup of ours ends, or by the timer below
                break
            mhs = sw.next_due(now)
            assert mhs is not None  # due: checked above
            if sw.paced:  # stopped since the cycle began: not reprovided
                mhs = [m for m in mhs if m in self.provided]
                if not mhs:
                    continue
            self._explore(sid, sw, mhs, now, out)
        if sid not in self.sweeps:
            return
        at = sw.next_start()
        if at is not None:
            if busy and sw.running == 0:
                at = now + cfg.rpc_timeout_s
            if at > now and sw.timer_at != at:
                sw.timer_at = at
                out.append(SetTimer(("sweep", sid), at))
        elif sw.done():
            del self.sweeps[sid]
            if sw.timer_at is not None:
                out.append(CancelTimer(("sweep", sid)))
            out.append(Emit(ProvideDone(sw.request_id, len(sw.keys), sw.regions, sw.lookups,
                                        sw.messages)))

    def _explore(self, sid: int, sw: Sweep, mhs: list[bytes], now: float,
                 out: list[Effect]) -> None:
        job = Region(mhs)
        # One lookup per half of the region that holds keys, aimed at its median
        # key: together they enumerate the region's peers (docs/dht.md, "Sweep").
        halves = [mhs] if len(mhs) == 1 else [
            part for _, part in prov.group_by_region({m: sw.keys[m] for m in mhs},
                                                     sw.bits + 1)]
        ops: list[RegionOp] = []
        for part in halves:
            op = self.lookups.start(RegionOp, 0, part[len(part) // 2], now, out,
                                    defer=True, k=self.config.region_lookup_size)
            if op is None:  # pragma: no cover - guarded by the busy check in _pump
                break
            op.sweep = sid
            op.job = job
            op.on_done = self._region_done
            ops.append(op)
            job.pending += 1
            sw.running += 1
            sw.lookups += 1
        for op in ops:
            self.lookups.advance(op, now, out)

    def _region_done(self, op: RegionOp, now: float, out: list[Effect]) -> None:
        """A region lookup ended (the runner has retired the op): once every lookup of
        the region has, send each key's ADD_PROVIDER to its k closest peers found."""
        sid = op.sweep
        job = op.job
        sw = self.sweeps.get(sid)
        if sw is None or job is None:
            return
        sw.running -= 1
        job.pending -= 1
        for p in op.lookup.closest(len(op.lookup)):
            job.peers[p] = None
        if job.pending == 0:
            sw.regions += 1
            me = (PeerInfo(self.me, self.addrs),)
            for mh, targets in prov.assign(sw.keys, job.mhs, list(job.peers), self.config.k):
                msg = KadMessage(MessageType.ADD_PROVIDER, mh, provider_peers=me)
                for p in targets:
                    out.append(Send(p, DhtRequest(0, msg)))
                    sw.messages += 1
        self._pump(sid, now, out)
