"""The simulated fault campaign: many seeds, each a capsule workload under a random
fault schedule, with an invariant checker after every step.

One seed (`run_seed`) builds `nodes` real nodes with `overlay.node.build_node` —
gossip (`Swim`) plus the capsule core, composed as in the daemon — so each node's
capsule custody runs over *its own* gossip view (`MembersChanged` from the gossip
events, a periodic `RefreshMembers`), not the shared oracle `Directory` of
sim/capsules.py: divergent views are what partitions produce, and what the campaign
is for. On top: a workload of `capsules` submissions at uniform random times
through random active nodes, the simulated executor of sim/capsules.py (runs
take a uniform time; a crashed executor's run never reports), durable custody (each
node's "disk" holds its `CustodyRecordChanged` records; a restarted node restores them
unless its disk was lost), and the fault schedule of sim/faults.py.

Faults are carried out by `FaultyWorld`, a `World` whose message path applies the
active partitions (symmetric, asymmetric, flapping), loss, duplication and
reordering; unreachable destinations (down, cut off) are reported to the sender as
`PeerUnreachable` after `unreachable_after_s`, like a failed dial. Clock skew wraps a
node's core (`_Clocked`): the core sees `now + offset` and its timers are moved back.

Timeline of a seed: joins over the first seconds (each node activates its capsule part
`settle_s` after joining, as the daemon does once membership settled), submissions in
[submit_from_s, submit_until_s], faults in [20 s, quiet_at], then a clean network with
every node up. The checker (sim/campaign_check.py) sees every event; liveness is checked
at `quiet_at + liveness_bound_s`, membership convergence every second after `quiet_at`
and asserted at `quiet_at + converge_bound_s`; the run stops at its event budget.

Left out of the fault model: blocks (no block store here, so "no acknowledged block lost"
is not checked), colony-mode admission (open mode: every key is a member), clock *rate*
drift (offsets only), disk corruption and partial writes.

Same seed and configuration, same run: every random draw comes from streams split off one
`random.Random(seed)`, and nothing reads a wall clock except the seeds/minute figure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from gossip.claim_verifier import Verifier
from gossip.events import Join, Leave
from gossip.profiles import profile
from gossip.resources import ResourceAd
from gossip.swim import Swim
from overlay.capsule import events as ev
from overlay.capsule.amnesia import Amnesia
from overlay.capsule.core import CapsuleCore, SubmitCapsule
from overlay.capsule.custody import CustodyConfig
from overlay.capsule.executor import CapsuleExited, ExecutorConfig
from overlay.capsule.leases import CustodyRecord, LeaseTiming
from overlay.capsule.part import Activate, CapsulePart, RefreshMembers, RestoreCustody
from overlay.capsule.receipts import Receipt
from overlay.capsule.spec import Capsule, CapsuleSpec, capsule_cid
from overlay.core.crypto import KeyPair
from overlay.core.effects import Effect, SetTimer
from overlay.core.ids import PeerId
from overlay.node import GossipSetup, Node, build_node
from sim import faults as F
from sim.campaign_check import INVARIANTS, REPORT_EVERY_S, Checker, Outcome
from sim.engine import Engine
from sim.network import Network, NetworkConfig
from sim.world import SimNode, World


@dataclass(frozen=True, slots=True)
class CampaignConfig:
    nodes: int = 16
    capsules: int = 30
    k_c: int = 3
    slots: int = 4
    run_min_s: float = 5.0
    run_max_s: float = 20.0
    submit_from_s: float = 15.0
    submit_until_s: float = 140.0
    quiet_at: float = 150.0
    #: Every acknowledged capsule has finished this long after the faults stopped.
    liveness_bound_s: float = 150.0
    #: Every live node's gossip view is the live set this long after the heal.
    converge_bound_s: float = 60.0
    #: Restart a node that lost its disk amnesiac (overlay/capsule/amnesia.py), as the
    #: daemon does when its custody store is gone but its identity is not. Off, it votes
    #: again with an empty store, which no daemon does (unsafe: test_capsule_amnesia.py).
    amnesia: bool = True
    #: Events a seed may run per node (16 nodes: ~4,000 each); more is a storm (`bounded`).
    max_events_per_node: int = 200_000
    #: Clocks read at most this far off the true time (`ClockSkew` faults), so one runs
    #: at most twice this ahead of another: the amnesia margin the campaign grants
    #: (`Amnesia.clock_margin_s`, the stated assumption; the daemon's is 600 s, which in
    #: a 300 s run would make a node that lost its disk abstain on every capsule).
    max_skew_s: float = 10.0
    settle_s: float = 5.0
    refresh_s: float = 2.0
    unreachable_after_s: float = 1.0
    min_faults: int = 4
    max_faults: int = 12
    max_down: int = 3
    #: Fault kinds drawn (sim/faults.py class names); empty: every kind.
    kinds: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.quiet_at + max(self.liveness_bound_s, self.converge_bound_s)

    def schedule_config(self) -> F.ScheduleConfig:
        return F.ScheduleConfig(self.nodes, quiet_at=self.quiet_at, min_faults=self.min_faults,
                                max_faults=self.max_faults, max_down=self.max_down,
                                max_skew_s=self.max_skew_s, kinds=self.kinds)  # fmt: skip


@dataclass(slots=True)
class SeedResult:
    seed: int
    schedule: list[F.Fault]
    checker: Checker
    events: int = 0
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.checker.counts().values())


class _Clocked:
    """A core whose clock reads `offset` off the simulator's (clock skew)."""

    __slots__ = ("node", "offset")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.offset = 0.0

    def handle(self, inp: Any, now: float) -> list[Effect]:
        s = self.offset
        effs = self.node.handle(inp, now + s)
        if not s:
            return effs
        return [SetTimer(e.timer, e.at - s) if isinstance(e, SetTimer) else e for e in effs]


class FaultyWorld(World):
    """A `World` whose message path applies the campaign's active network faults."""

    def __init__(self, engine: Engine, net: Network, rng: random.Random) -> None:
        super().__init__(engine, net)
        self.rng = rng
        #: Active cuts: (side, symmetric). Lists, since faults may overlap.
        self.cuts: list[tuple[frozenset[int], bool]] = []
        self.loss: list[float] = []
        self.dup: list[float] = []
        self.reorder: list[tuple[float, float]] = []
        self.stats.update({"fault_lost": 0, "fault_cut": 0, "duplicated": 0, "reordered": 0})

    def cut(self, src: int, dst: int) -> bool:
        for side, symmetric in self.cuts:
            if (src in side) != (dst in side) and (symmetric or src in side):
                return True
        return False

    def _send(self, n: SimNode, dst: PeerId, msg: Any) -> None:
        stats = self.stats
        stats["sent"] += 1
        self.sent[n.idx] += 1
        name = type(msg).__name__
        self.by_type[name] = self.by_type.get(name, 0) + 1
        d = self.index.get(dst)
        if d is None:
            stats["unknown_peer"] += 1
            return
        now = self.engine.now
        if not self.nodes[d].alive or self.cut(n.idx, d):
            stats["unreachable" if not self.nodes[d].alive else "fault_cut"] += 1
            after = self.net.cfg.unreachable_after_s
            if after > 0:
                self.engine.at(now + after, self._unreachable, (n, n.epoch, dst))
            return
        rng = self.rng
        if self.loss and rng.random() < max(self.loss):
            stats["fault_lost"] += 1
            return
        delay = self.net.delay(n.idx, d)
        if delay is None:
            return
        for rate, extra in self.reorder:
            if rng.random() < rate:
                stats["reordered"] += 1
                delay += rng.uniform(0.0, extra)
        self.engine.at(now + delay, self._deliver, (n.peer, d, msg))
        if self.dup and rng.random() < max(self.dup):
            stats["duplicated"] += 1
            self.engine.at(now + delay + rng.uniform(0.0, 0.2), self._deliver, (n.peer, d, msg))


class Campaign:
    """One seed: nodes, workload, fault schedule, checker. `run()` → `SeedResult`."""

    def __init__(self, seed: int, cfg: CampaignConfig | None = None) -> None:
        self.seed = seed
        self.cfg = cfg = cfg or CampaignConfig()
        master = random.Random(seed)
        self.rng_keys = random.Random(master.getrandbits(64))
        self.rng_cores = random.Random(master.getrandbits(64))
        rng_net = random.Random(master.getrandbits(64))
        rng_faults = random.Random(master.getrandbits(64))
        self.rng_work = random.Random(master.getrandbits(64))
        self.rng_runs = random.Random(master.getrandbits(64))
        self.schedule = F.generate(master.getrandbits(64), cfg.schedule_config())
        self.engine = Engine()
        net_cfg = NetworkConfig(unreachable_after_s=cfg.unreachable_after_s)
        self.world = FaultyWorld(self.engine, Network(net_cfg, rng_net), rng_faults)
        self.world.on_emit = self._on_emit
        self.swim_cfg = profile("lan")
        self.verifier = Verifier(4096)
        timing = LeaseTiming(6.0, 2.0, 3.0)
        self.custody_cfg = CustodyConfig(k_c=cfg.k_c, timing=timing, durable=True)
        self.exec_cfg = ExecutorConfig(slots=cfg.slots, cpu=float(cfg.slots),
                                       mem_mib=1024 * cfg.slots)  # fmt: skip
        self.keys = [KeyPair.from_rng_seed(self.rng_keys.randbytes(32)) for _ in range(cfg.nodes)]
        self.checker = Checker(frozenset(k.peer_id for k in self.keys))
        self.disks: list[dict[bytes, bytes]] = [{} for _ in range(cfg.nodes)]
        #: Nodes that lost their custody store (but kept their keys), and when, by
        #: their own clock: they restart amnesiac (overlay/capsule/amnesia.py). Kept
        #: beside the keys, so a later restart without disk loss still knows.
        self.forgot: dict[int, float] = {}
        self._lost: set[int] = set()
        self.active: list[bool] = [False] * cfg.nodes
        self.stats: dict[str, int] = {}
        self._nonce = 0
        self._signers: dict[str, PeerId] = {}
        for k in self.keys:
            self.world.add(k.peer_id, self._make_core(k))
        for i in range(cfg.nodes):
            self.world.crash(i)  # up at its join time
        self.log: list[str] = []

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    # ------------------------------------------------------------ nodes

    def _make_core(self, keys: KeyPair, forgot_before: float | None = None) -> _Clocked:
        rng = random.Random(self.rng_cores.getrandbits(64))
        custody = self.custody_cfg
        if forgot_before is not None:
            margin = 2 * self.cfg.max_skew_s
            custody = replace(custody, amnesia=Amnesia(forgot_before, clock_margin_s=margin))
        capsule = CapsuleCore(keys.peer_id, keys, custody=custody,
                              executor=self.exec_cfg,
                              rng=random.Random(rng.getrandbits(64)))  # fmt: skip
        ad = ResourceAd(cpu_cores=self.cfg.slots, mem_bytes=(1024 * self.cfg.slots) << 20,
                        executors=("subprocess",), tags=(f"slots={self.cfg.slots}",))  # fmt: skip
        gossip = GossipSetup(self.swim_cfg, ad=ad, verifier=self.verifier)
        return _Clocked(build_node(keys, rng, gossip=gossip, capsule=capsule).node)

    def _clocked(self, idx: int) -> _Clocked:
        core = self.world.nodes[idx].core
        assert isinstance(core, _Clocked)
        return core

    def swim(self, idx: int) -> Swim:
        part = self._clocked(idx).node.parts["gossip"]
        assert isinstance(part, Swim)
        return part

    def capsule_core(self, idx: int) -> CapsuleCore:
        part = self._clocked(idx).node.parts["capsule"]
        assert isinstance(part, CapsulePart)
        return part.core

    def _start(self, idx: int, *, fresh: bool) -> None:
        """(Re)start node `idx`: a new process, its disk restored, joining via seeds."""
        w = self.world
        old_offset = self._clocked(idx).offset
        if fresh:
            if idx in self._lost and self.cfg.amnesia:  # custody store empty, keys intact
                self._lost.discard(idx)
                self.forgot[idx] = self.engine.now + old_offset
            core = self._make_core(self.keys[idx], self.forgot.get(idx))
            core.offset = old_offset  # the machine's clock, not the process's
            w.restart(idx, core)
        else:
            w.restart(idx, w.nodes[idx].core)
        self.active[idx] = False
        if self.disks[idx]:
            w.inject(idx, RestoreCustody(tuple(self.disks[idx].values())))
        seeds = [w.nodes[i].peer for i in range(self.cfg.nodes) if i != idx and w.nodes[i].alive]
        w.inject(idx, Join(tuple(seeds[:3])))
        epoch = w.nodes[idx].epoch
        self.engine.after(self.cfg.settle_s, self._activate, (idx, epoch))

    def _activate(self, arg: tuple[int, int]) -> None:
        idx, epoch = arg
        n = self.world.nodes[idx]
        if not n.alive or n.epoch != epoch:
            return
        self.active[idx] = True
        self.world.inject(idx, Activate())
        self.engine.after(self.cfg.refresh_s, self._refresh, arg)

    def _refresh(self, arg: tuple[int, int]) -> None:
        idx, epoch = arg
        n = self.world.nodes[idx]
        if n.alive and n.epoch == epoch:
            self.world.inject(idx, RefreshMembers())
            self.engine.after(self.cfg.refresh_s, self._refresh, arg)

    # ------------------------------------------------------------ faults

    def _install(self, f: F.Fault) -> None:
        e, w = self.engine, self.world
        if isinstance(f, F.Partition):
            cut = (frozenset(f.side), f.symmetric)
            e.at(f.at, lambda _: w.cuts.append(cut))
            e.at(f.until, lambda _: w.cuts.remove(cut))
        elif isinstance(f, F.Flapping):
            t, on = f.at, True
            while t < f.until:
                cut = (frozenset(f.side), True)
                end = min(t + f.period_s, f.until)
                if on:
                    e.at(t, w.cuts.append, cut)
                    e.at(end, w.cuts.remove, cut)
                t, on = end, not on
        elif isinstance(f, F.Crash):
            e.at(f.at, self._crash, f)
            e.at(f.at + f.down_s, self._restart, f.node)
        elif isinstance(f, F.Leave):
            e.at(f.at, self._leave, f)
            e.at(f.at + f.down_s, self._restart, f.node)
        elif isinstance(f, F.Loss | F.Duplicate):
            lst = w.loss if isinstance(f, F.Loss) else w.dup
            e.at(f.at, lst.append, f.rate)
            e.at(f.until, lst.remove, f.rate)
        elif isinstance(f, F.Reorder):
            item = (f.rate, f.delay_s)
            e.at(f.at, w.reorder.append, item)
            e.at(f.until, w.reorder.remove, item)
        elif isinstance(f, F.ClockSkew):
            e.at(f.at, self._skew, f)

    def _crash(self, f: F.Crash) -> None:
        self._count("crashes")
        self.world.crash(f.node)
        if f.disk_loss:
            self._count("disk_losses")
            self.disks[f.node] = {}
            self._lost.add(f.node)

    def _leave(self, f: F.Leave) -> None:
        n = self.world.nodes[f.node]
        if not n.alive:
            return
        self._count("leaves")
        self.world.inject(f.node, Leave())
        self.engine.after(self.swim_cfg.leave_propagate_s + 1.0, self._stop, (f.node, n.epoch))

    def _stop(self, arg: tuple[int, int]) -> None:
        idx, epoch = arg
        if self.world.nodes[idx].epoch == epoch:
            self.world.crash(idx)

    def _restart(self, idx: int) -> None:
        if self.world.nodes[idx].alive:
            return
        self._count("restarts")
        self._start(idx, fresh=True)

    def _skew(self, f: F.ClockSkew) -> None:
        self._clocked(f.node).offset = f.offset_s

    # ------------------------------------------------------------ workload and executor

    def _submit(self, _: Any = None) -> None:
        live = [i for i in range(self.cfg.nodes) if self.world.nodes[i].alive and self.active[i]]
        if not live:
            self._count("submit_no_active_node")
            return
        idx = live[self.rng_work.randrange(len(live))]
        self._nonce += 1
        spec = CapsuleSpec(name="job", command=("work",), maxretries=5)
        cap = Capsule.sign(self.keys[idx], spec, self.engine.now, self._nonce)
        self.checker.submitted[cap.id] = self.engine.now
        self._signers[cap.id] = cap.submitter
        self.world.inject(idx, SubmitCapsule(cap))

    def _on_run(self, idx: int, e: ev.RunRequested) -> None:
        d = self.rng_runs.uniform(self.cfg.run_min_s, self.cfg.run_max_s)
        n = self.world.nodes[idx]
        self.engine.after(d, self._exit, (idx, n.epoch, e.capsule.id, e.token, 0, self.engine.now))

    def _on_kill(self, idx: int, e: ev.KillRequested) -> None:
        n = self.world.nodes[idx]
        self.engine.after(0.0, self._exit, (idx, n.epoch, e.capsule_id, e.token, -2,
                                            self.engine.now))  # fmt: skip

    def _exit(self, arg: tuple[int, int, str, int, int, float]) -> None:
        idx, epoch, cid, token, status, t0 = arg
        n = self.world.nodes[idx]
        if not n.alive or n.epoch != epoch:
            return  # the executor crashed: its process died with it
        run = self.capsule_core(idx).executor.running.get(cid)
        if run is None or run.token != token:
            return  # killed or superseded earlier
        out = (capsule_cid(f"{cid}/{token}".encode()),) if status == 0 else ()
        self.world.inject(idx, CapsuleExited(cid, token, status, out, "", t0, self.engine.now))

    # ------------------------------------------------------------ events → checker

    def _on_emit(self, idx: int, e: Any) -> None:
        t, c = self.engine.now, self.checker
        me = self.world.nodes[idx].peer
        if isinstance(e, ev.CustodyRecordChanged):
            disk = self.disks[idx]
            if e.record is None:
                disk.pop(e.capsule_id, None)
            else:
                disk[e.capsule_id] = e.record
        elif isinstance(e, ev.SubmissionAccepted):
            c.acked.setdefault(e.capsule_id, t)
        elif isinstance(e, ev.CapsuleAccepted):
            c.on_accepted_submission(t, e.capsule_id, self._signers.get(e.capsule_id, e.origin))
        elif isinstance(e, ev.CapsuleLeased):
            c.on_leased(t, e.capsule_id, e.token, e.executor)
        elif isinstance(e, ev.ReceiptAccepted):
            c.on_receipt(t, me, e.capsule_id, e.token, e.receipt.executor)
        elif isinstance(e, ev.CapsuleFinished):
            c.on_finished(t, e.capsule_id, e.state, _outcome_of(e.state, e.receipt))
        elif isinstance(e, ev.RunRequested):
            self._on_run(idx, e)
        elif isinstance(e, ev.KillRequested):
            self._on_kill(idx, e)

    # ------------------------------------------------------------ reports

    def _check_reports(self, _: Any = None) -> None:
        """`reported_outcome`: what every live node would report (`Custody.report`)."""
        t, w = self.engine.now, self.world
        for i in range(self.cfg.nodes):
            if not w.nodes[i].alive:
                continue
            for rep in self.capsule_core(i).custody.reports():
                rec = rep.record
                if rec is not None and rec.terminal:
                    self.checker.check_reports(t, w.nodes[i].peer, rec.capsule_id,
                                               _outcome_of(rec.state.value, rec.receipt))
        if t + REPORT_EVERY_S <= self.cfg.duration_s:
            self.engine.after(REPORT_EVERY_S, self._check_reports)

    def _check_liveness(self, _: Any = None) -> None:
        w = self.world
        held: set[str] = set()
        blocked: set[str] = set()
        for i in range(self.cfg.nodes):
            if w.nodes[i].alive:
                for rec in self.capsule_core(i).custody.records():
                    held.add(rec.capsule_id)
                    if self._majority_forgot(rec):
                        blocked.add(rec.capsule_id)
        self.checker.check_liveness(self.engine.now, self.cfg.liveness_bound_s, held, blocked)

    def _majority_forgot(self, rec: CustodyRecord) -> bool:
        """A configuration `rec` needs has too few members left that may vote on it
        (the others lost their disks after it was submitted and abstain)."""
        index = {k.peer_id: i for i, k in enumerate(self.keys)}
        for cfg in (rec.config, *rec.joint):
            voters = sum(1 for p in cfg if p in index and not self.capsule_core(
                index[p]).custody.replicator.amnesia.abstains(rec))  # fmt: skip
            if cfg and voters < len(cfg) // 2 + 1:
                return True
        return False

    def _check_held(self, _: Any = None) -> None:
        """`stale_copy`: no live node still holds a finished copy never committed."""
        t, w = self.engine.now, self.world
        for i in range(self.cfg.nodes):
            if not w.nodes[i].alive:
                continue
            for rec in self.capsule_core(i).custody.records():
                if rec.terminal and not self._majority_forgot(rec):  # blocked, counted
                    self.checker.check_held(t, w.nodes[i].peer, rec.capsule_id,
                                            _outcome_of(rec.state.value, rec.receipt))

    # ------------------------------------------------------------ convergence

    def view_errors(self) -> list[str]:
        """Nodes whose gossip view is not the live set (all nodes are up after heal)."""
        w = self.world
        live = {w.nodes[i].peer for i in range(self.cfg.nodes) if w.nodes[i].alive}
        wrong = []
        for i in range(self.cfg.nodes):
            if not w.nodes[i].alive:
                continue
            seen = {m.peer for m in self.swim(i).list_members()}
            if seen != live:
                wrong.append(f"node {i} sees {len(seen & live)}/{len(live)} live"
                             f" and {len(seen - live)} gone")
        return wrong

    def _watch_convergence(self, _: Any = None) -> None:
        if self.checker.converged_at is not None:
            return
        if not self.view_errors():
            self.checker.converged_at = self.engine.now
            return
        deadline = self.cfg.quiet_at + self.cfg.converge_bound_s
        if self.engine.now >= deadline - 1e-9:
            self.checker.check_membership(self.engine.now, self.cfg.converge_bound_s,
                                          self.view_errors())  # fmt: skip
            return
        self.engine.after(1.0, self._watch_convergence)

    # ------------------------------------------------------------ the run

    def build(self) -> None:
        cfg = self.cfg
        for i in range(cfg.nodes):
            self.engine.at(0.5 * i, lambda i: self._start(i, fresh=False), i)
        for _ in range(cfg.capsules):
            self.engine.at(self.rng_work.uniform(cfg.submit_from_s, cfg.submit_until_s),
                           self._submit)  # fmt: skip
        for f in self.schedule:
            self._install(f)
        self.engine.at(cfg.quiet_at, self._watch_convergence)
        self.engine.at(cfg.quiet_at + cfg.liveness_bound_s, self._check_liveness)
        self.engine.at(cfg.quiet_at + cfg.liveness_bound_s, self._check_held)
        self.engine.at(REPORT_EVERY_S, self._check_reports)

    def run(self) -> SeedResult:
        self.build()
        budget = self.cfg.max_events_per_node * self.cfg.nodes
        self.engine.run_until(self.cfg.duration_s + 1e-6, budget)
        if self.engine.now < self.cfg.duration_s:  # the budget ran out first
            self.checker.ran_out(self.engine.now, budget, self.world.received)
        stats = dict(self.stats)
        stats.update({f"net_{k}": v for k, v in sorted(self.world.stats.items())})
        c = self.checker
        stats.update(submitted=len(c.submitted), acked=len(c.acked), finished=len(c.finished),
                     blocked=len(c.blocked))  # fmt: skip
        return SeedResult(self.seed, self.schedule, c, self.engine.events_run, stats)


def _outcome_of(state: str, receipt: Receipt | None) -> Outcome:
    return (state, receipt.token, receipt.executor) if receipt else (state, 0, None)


def run_seed(seed: int, cfg: CampaignConfig | None = None) -> SeedResult:
    return Campaign(seed, cfg).run()


def replay_command(seed: int, cfg: CampaignConfig) -> str:
    """The one-line command that runs `seed` again, alone and verbosely."""
    default = CampaignConfig()
    extra = "" if cfg.nodes == default.nodes else f" --nodes {cfg.nodes}"
    if cfg.capsules != default.capsules:
        extra += f" --capsules {cfg.capsules}"
    if cfg.kinds:
        extra += f" --only {','.join(cfg.kinds)}"
    if not cfg.amnesia:
        extra += " --no-amnesia"
    return f"colony sim campaign --seeds 1 --start {seed}{extra} --verbose"


@dataclass(slots=True)
class Summary:
    """A campaign over many seeds: per-invariant violation counts and failing seeds."""

    results: list[SeedResult] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def seeds_per_minute(self) -> float:
        return 60.0 * len(self.results) / self.wall_s if self.wall_s > 0 else 0.0

    def counts(self) -> dict[str, int]:
        """Per invariant: the number of seeds that violated it."""
        per_seed = [r.checker.counts() for r in self.results]
        return {k: sum(1 for c in per_seed if c.get(k)) for k in INVARIANTS}

    def failing(self, kind: str) -> list[int]:
        return [r.seed for r in self.results if r.checker.counts().get(kind)]


def run_campaign(seeds: int, start: int = 0, cfg: CampaignConfig | None = None,
                 on_result: Any = None) -> Summary:  # fmt: skip
    """Run seeds `start` … `start + seeds - 1`; `on_result(result)` after each."""
    import time

    cfg = cfg or CampaignConfig()
    s = Summary()
    t0 = time.perf_counter()
    for seed in range(start, start + seeds):
        r = run_seed(seed, cfg)
        s.results.append(r)
        if on_result is not None:
            on_result(r)
    s.wall_s = time.perf_counter() - t0
    return s
