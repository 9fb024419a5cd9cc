"""Capsule simulation: every node a real `CapsuleCore` (custody, executor, origin), with
churn, at 10^4 nodes and 10^5 capsules in one process.

Scenario: ``[nodes] protocols = ["capsule"]``, a ``[capsule]`` table
(sim/capsule_config.py) and ``[[workload]] kind = "capsule"`` (Poisson submissions
through random live nodes; ``limit`` caps their number). `sim.simulations.simulation_for(sc)`
returns a `CapsuleSimulation` for such scenarios, so ``colony sim run`` runs them.

What is real and what is modelled:
- real: the capsule cores and their messages (submit, replicate, sync, offers,
  heartbeats, receipts, status), delivered through sim/world.py over sim/network.py
  (latency, jitter, loss); durable custody (each node's "disk" is a dict fed by its
  `CustodyRecordChanged` events; a returning node calls `restore` with it).
- modelled: membership. Running full SWIM at 10^4 nodes costs O(N²) memory and hours
  (docs/simulation.md, Performance), so membership is an *oracle*: one `Directory` of
  live members shared by every core, updated `detect_s` after a crash or join (what
  SWIM detection would take) and announced with `ViewRefreshed` to the
  `notify_nearest` nodes XOR-closest to the changed node (the only ones whose custodian
  sets can contain it; executors' leaders learn of a dead executor by lease expiry).
  Executors' resource ads in the directory are updated when a run starts or ends
  (gossip converged at once). Process runs are a uniform time; a crashed executor's
  run never reports.

Measured (metrics.json): `capsule_submit_to_running_s` (submit → the custody leader
saw the attempt that later started it, first `CapsuleStarted`), `capsule_submit_to_
finished_s` (→ first `CapsuleFinished`), completion rate, exactly-once checks (capsules
with two accepted receipts; lease tokens not strictly increasing), messages per capsule
by type, takeovers, requeues, restores.
"""

from __future__ import annotations

import random
from typing import Any

from overlay.capsule import events as ev
from overlay.capsule.core import CapsuleCore, SubmitCapsule
from overlay.capsule.custody import CustodyConfig
from overlay.capsule.executor import CapsuleExited, ExecutorConfig
from overlay.capsule.leases import LeaseTiming
from overlay.capsule.members import Directory, Member, ViewRefreshed
from overlay.capsule.spec import Capsule, CapsuleSpec, capsule_cid
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from sim.runner import Simulation
from sim.scenario import Scenario, Workload

ROLES = ("execute", "member", "submit")


class _LiveSet:
    """Live node slots with O(1) add, remove and uniform choice (swap-remove)."""

    __slots__ = ("items", "pos")

    def __init__(self) -> None:
        self.items: list[int] = []
        self.pos: dict[int, int] = {}

    def add(self, i: int) -> None:
        if i not in self.pos:
            self.pos[i] = len(self.items)
            self.items.append(i)

    def remove(self, i: int) -> None:
        p = self.pos.pop(i, None)
        if p is None:
            return
        last = self.items.pop()
        if last != i:
            self.items[p] = last
            self.pos[last] = p

    def choice(self, rng: random.Random) -> int | None:
        return self.items[rng.randrange(len(self.items))] if self.items else None


class CapsuleSimulation(Simulation):
    def __init__(self, sc: Scenario, *, progress: bool = False) -> None:
        super().__init__(sc, progress=progress)
        cc = sc.capsule
        self.cc = cc
        self.directory = Directory()
        timing = LeaseTiming(cc.lease_timeout_s, cc.heartbeat_s, cc.offer_timeout_s)
        self.custody_cfg = CustodyConfig(k_c=cc.k_c, timing=timing,
                                         max_candidates=cc.max_candidates,
                                         durable=cc.durable)  # fmt: skip
        self.exec_cfg = ExecutorConfig(slots=cc.slots, cpu=float(cc.slots),
                                       mem_mib=1024 * cc.slots)  # fmt: skip
        self.rng_runs = random.Random(self.rng_work.getrandbits(64))
        self.live_set = _LiveSet()
        self.disks: list[dict[bytes, bytes]] = []
        self.busy: list[int] = []
        self.submitted: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.finished: dict[str, tuple[float, str]] = {}
        self.accepted: dict[str, int] = {}
        self.last_token: dict[str, int] = {}
        #: When each capsule was last leased or taken over (tests explain unfinished
        #: capsules by it; not written to the metrics).
        self.leased_at: dict[str, float] = {}
        self._nonce = 0
        self._limits: dict[int, int] = {}
        self._initial = False
        self.workloads.register("capsule", self._submit_capsule)

    # ------------------------------------------------------------ nodes

    def _make_core(self, keys: KeyPair) -> Any:
        rng = random.Random(self.rng_cores.getrandbits(64))
        return CapsuleCore(keys.peer_id, keys, custody=self.custody_cfg, executor=self.exec_cfg,
                           rng=rng, directory=self.directory)  # fmt: skip

    def _spawn(self) -> int:
        idx = super()._spawn()
        self.disks.append({})
        self.busy.append(0)
        return idx

    def _member(self, idx: int) -> Member:
        free = self.exec_cfg.ad(self.busy[idx])
        return Member(self.world.nodes[idx].peer, free, ROLES)

    def _notify_near(self, peer: PeerId) -> None:
        """Tell the nodes whose custodian sets may contain `peer` to re-evaluate."""
        for p in self.directory.closest(peer.key, self.cc.notify_nearest):
            i = self.world.index[p]
            if p != peer and self.world.nodes[i].alive:
                self.world.inject(i, ViewRefreshed())

    def _join_fresh(self, idx: int) -> None:
        w = self.world
        n = w.nodes[idx]
        w.restart(idx, n.core)
        self.metrics.count("joins")
        self.live_set.add(idx)
        if self.cc.durable and self.disks[idx]:
            core = n.core
            assert isinstance(core, CapsuleCore)
            w.apply(n, core.restore(list(self.disks[idx].values()), self.engine.now))
            self.metrics.count("capsule_restored_records", len(core.custody.records()))
        # The founding members are known at once; later joins after detection time.
        if self._initial:
            self._appear((idx, n.epoch))
        else:
            self.engine.at(self.engine.now + self.cc.detect_s, self._appear, (idx, n.epoch))
        if self.sc.churn is not None and self.engine.now >= self.sc.churn.start_s:
            self._schedule_session_end(idx)

    def _first_join(self, idx: int) -> None:
        self._initial = True
        try:
            self._join_fresh(idx)
        finally:
            self._initial = False

    def _appear(self, arg: tuple[int, int]) -> None:
        idx, epoch = arg
        n = self.world.nodes[idx]
        if not n.alive or n.epoch != epoch:
            return
        self.directory.put(self._member(idx))
        self.world.inject(idx, ViewRefreshed())
        self._notify_near(n.peer)

    def _take_down(self, idx: int, *, graceful: bool, rejoin: bool) -> None:
        n = self.world.nodes[idx]
        self.world.crash(idx)
        self.live_set.remove(idx)
        self.busy[idx] = 0
        # A graceful leave is announced at once; a crash is noticed detect_s later.
        delay = 0.0 if graceful else self.cc.detect_s
        self.engine.at(self.engine.now + delay, self._vanish, (idx, n.epoch))
        if rejoin:
            self._schedule_rejoin(idx)

    def _vanish(self, arg: tuple[int, int]) -> None:
        idx, epoch = arg
        n = self.world.nodes[idx]
        if n.epoch != epoch:
            return  # back already (a restart faster than detection): nothing to tell
        if self.directory.remove(n.peer):
            self._notify_near(n.peer)

    def _random_live(self) -> int | None:
        return self.live_set.choice(self.rng_work)

    def live_peers(self) -> set[PeerId]:
        return {n.peer for n in self.world.nodes if n.alive}

    def custody_blocked(self, cid: str, live: set[PeerId]) -> bool:
        """Whether capsule `cid` is held up by custody that lost a majority for good.

        True when the newest copy of its record (over every node, the dead too: their
        records are what their disks hold) names a configuration — its own or one it is
        still joint with, an activation not known committed — a majority of which is
        dead: custody epochs never act without that majority (docs/capsules.md)."""
        nodes = self.world.nodes
        top = None
        for n in nodes:
            core = n.core
            if isinstance(core, CapsuleCore) and (r := core.custody.record(cid)):
                if top is None or r.order > top.order:
                    top = r
        if top is None:
            return False
        return any(c and sum(p not in live for p in c) >= len(c) // 2 + 1
                   for c in (top.config, *top.joint))

    # ------------------------------------------------------------ events

    def _build_handlers(self) -> None:
        self._handlers = {
            ev.RunRequested: self._on_run,
            ev.CapsuleStarted: self._on_started,
            ev.CapsuleFinished: self._on_finished,
            ev.ReceiptAccepted: self._on_accepted,
            ev.CapsuleLeased: self._on_leased,
            ev.CustodyRecordChanged: self._on_persist,
            ev.SubmissionRejected: lambda i, e: self.metrics.count("capsule_submissions_rejected"),
            ev.CustodyTakenOver: self._on_taken_over,
            ev.CapsuleRequeued: lambda i, e: self.metrics.count("capsule_requeued"),
            ev.KillRequested: self._on_kill,
        }

    def _on_persist(self, idx: int, e: ev.CustodyRecordChanged) -> None:
        disk = self.disks[idx]
        if e.record is None:
            disk.pop(e.capsule_id, None)
        else:
            disk[e.capsule_id] = e.record

    def _set_busy(self, idx: int, delta: int) -> None:
        self.busy[idx] = max(0, self.busy[idx] + delta)
        if self.world.nodes[idx].peer in self.directory:
            self.directory.put(self._member(idx))

    def _on_run(self, idx: int, e: ev.RunRequested) -> None:
        self._set_busy(idx, +1)
        d = self.rng_runs.uniform(self.cc.run_min_s, self.cc.run_max_s)
        status = 1 if self.rng_runs.random() < self.cc.fail_fraction else 0
        n = self.world.nodes[idx]
        arg = (idx, n.epoch, e.capsule.id, e.token, status, self.engine.now)
        self.engine.at(self.engine.now + d, self._exit, arg)

    def _on_kill(self, idx: int, e: ev.KillRequested) -> None:
        n = self.world.nodes[idx]
        core = n.core
        assert isinstance(core, CapsuleCore)
        run = core.executor.running.get(e.capsule_id)
        if run is None or run.token != e.token:
            self._set_busy(idx, -1)  # revoked or superseded: the core let go already
            return
        # maxexectime: the runtime kills the process and reports its exit.
        arg = (idx, n.epoch, e.capsule_id, e.token, -2, self.engine.now)
        self.engine.at(self.engine.now, self._exit, arg)

    def _exit(self, arg: tuple[int, int, str, int, int, float]) -> None:
        idx, epoch, cid, token, status, t0 = arg
        n = self.world.nodes[idx]
        if not n.alive or n.epoch != epoch:
            return  # the executor crashed: its process died with it
        core = n.core
        assert isinstance(core, CapsuleCore)
        run = core.executor.running.get(cid)
        if run is None or run.token != token:
            return  # killed earlier (one exit per attempt)
        self._set_busy(idx, -1)
        out = (capsule_cid(f"{cid}/{token}".encode()),) if status == 0 else ()
        self.world.inject(idx, CapsuleExited(cid, token, status, out, "", t0, self.engine.now))

    def _on_started(self, idx: int, e: ev.CapsuleStarted) -> None:
        if e.capsule_id not in self.started and e.capsule_id in self.submitted:
            self.started[e.capsule_id] = self.engine.now

    def _on_finished(self, idx: int, e: ev.CapsuleFinished) -> None:
        if e.capsule_id not in self.finished and e.capsule_id in self.submitted:
            self.finished[e.capsule_id] = (self.engine.now, e.state)

    def _on_accepted(self, idx: int, e: ev.ReceiptAccepted) -> None:
        self.accepted[e.capsule_id] = self.accepted.get(e.capsule_id, 0) + 1

    def _on_leased(self, idx: int, e: ev.CapsuleLeased) -> None:
        if e.token <= self.last_token.get(e.capsule_id, 0):
            self.metrics.count("capsule_token_not_increasing")
        self.last_token[e.capsule_id] = max(e.token, self.last_token.get(e.capsule_id, 0))
        self.leased_at[e.capsule_id] = self.engine.now

    def _on_taken_over(self, idx: int, e: ev.CustodyTakenOver) -> None:
        self.metrics.count("capsule_takeovers")
        # A takeover gives a live lease a fresh lease period (replication.finish_sync).
        self.leased_at[e.capsule_id] = self.engine.now

    # ------------------------------------------------------------ workload

    def _submit_capsule(self, w: Workload) -> None:
        """One draw of a "capsule" workload: a signed capsule through a random live node."""
        key = id(w)
        done = self._limits.get(key, 0)
        if w.limit and done >= w.limit:
            return
        idx = self._random_live()
        if idx is None:
            self.metrics.count("workload_no_live_node")
            return
        self._limits[key] = done + 1
        self._nonce += 1
        spec = CapsuleSpec(name="job", command=("work",), maxretries=self.cc.maxretries)
        cap = Capsule.sign(self.keys[idx], spec, self.engine.now, self._nonce)
        self.submitted[cap.id] = self.engine.now
        self.world.inject(idx, SubmitCapsule(cap))

    # ------------------------------------------------------------ sampling and results

    def _sample(self, _: Any = None) -> None:
        now = self.engine.now
        self.metrics.row("timeseries", t=now, live=len(self.live_set.items),
                         submitted=len(self.submitted), started=len(self.started),
                         finished=len(self.finished),
                         messages=self.world.stats["sent"])  # fmt: skip
        nxt = now + self.sc.sample_interval_s
        if nxt <= self.sc.duration_s + 1e-9:
            self.engine.at(nxt, self._sample)

    def _finish(self) -> None:
        super()._finish()
        m = self.metrics
        n = len(self.submitted)
        states: dict[str, int] = {}
        for cid, t0 in self.submitted.items():
            if cid in self.started:
                m.sample("capsule_submit_to_running_s", self.started[cid] - t0)
            fin = self.finished.get(cid)
            if fin is not None:
                states[fin[1]] = states.get(fin[1], 0) + 1
                m.sample("capsule_submit_to_finished_s", fin[0] - t0)
        m.counters["capsules_submitted"] = n
        for s in ("succeeded", "failed", "cancelled"):
            m.counters[f"capsules_{s}"] = states.get(s, 0)
        m.counters["capsules_unfinished"] = n - sum(states.values())
        m.counters["capsules_accepted_twice"] = sum(1 for v in self.accepted.values() if v > 1)
        m.counters.setdefault("capsule_token_not_increasing", 0)
        sent = self.world.stats["sent"]
        m.info["capsule_completion_rate"] = states.get("succeeded", 0) / n if n else 0.0
        m.info["capsule_messages_per_capsule"] = sent / n if n else 0.0
        m.info["capsule_messages_per_capsule_by_type"] = {
            k: v / n for k, v in sorted(self.world.by_type.items())
        } if n else {}  # fmt: skip
        m.info["membership"] = "oracle directory (detect_s after each change)"
