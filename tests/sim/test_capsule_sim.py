"""Capsule custody in the simulator: 30 nodes, each a full `CapsuleCore` (custody +
executor + origin), wired through sim/router.py in virtual time. Process runs are
simulated by the harness: a `RunRequested` event schedules `CapsuleExited` later.

Asserted: every capsule ends with exactly one accepted receipt (counted over every
node's `ReceiptAccepted` events); killing executors mid-run re-leases their capsules
with higher tokens; killing leading custodians hands custody to another custodian;
a 5-step workflow runs in dependency order and each step receives its parents' outputs
by name; a failing step fails everything downstream with the reason. Seeds are printed
on failure.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from helpers.core_net import CoreNet

from overlay.capsule import events as ev
from overlay.capsule.core import CapsuleCore, SubmitCapsule
from overlay.capsule.custody import CustodyConfig
from overlay.capsule.dataflow import ParentOutput, output_names
from overlay.capsule.executor import CapsuleExited, ExecutorConfig
from overlay.capsule.leases import TERMINAL, State
from overlay.capsule.members import Member, MembersChanged
from overlay.capsule.spec import Capsule, CapsuleSpec, capsule_cid, capsule_key
from overlay.capsule.workflow_spec import Workflow
from overlay.core.certs import Certificate
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId

ROLES = ("execute", "member", "submit")


class Cluster:
    def __init__(
        self,
        n: int,
        seed: int,
        *,
        slots: int = 4,
        run_s: tuple[float, float] = (2.0, 8.0),
        exit_status: Callable[[str], int] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.router = CoreNet(delay_s=0.01, rng=random.Random(seed + 1))
        self.owner = KeyPair.from_rng_seed(self.rng.randbytes(32))
        self.keys: dict[PeerId, KeyPair] = {}
        self.chains: dict[PeerId, tuple[Certificate, ...]] = {}
        self.cores: dict[PeerId, CapsuleCore] = {}
        self.run_s = run_s
        self.exit_status = exit_status or (lambda cid: 0)
        self.exec_cfg = ExecutorConfig(slots=slots, cpu=8, mem_mib=16384)
        cfg = CustodyConfig(colony_owner=self.owner.public.raw)
        for _ in range(n):
            kp = KeyPair.from_rng_seed(self.rng.randbytes(32))
            me = kp.peer_id
            self.keys[me] = kp
            cert = Certificate.issue(self.owner, self.owner.public, me, ROLES, 0, 1e9)
            self.chains[me] = (cert,)
            core = CapsuleCore(me, kp, custody=cfg, executor=self.exec_cfg,
                               rng=random.Random(self.rng.random()))  # fmt: skip
            self.cores[me] = core
            self.router.add(me, core)
        self.peers = list(self.cores)
        self.accepted: dict[str, list[tuple[float, PeerId, int]]] = {}
        self.finished: dict[str, list[tuple[PeerId, str]]] = {}
        self.leased: dict[str, list[int]] = {}
        self.started: dict[str, list[tuple[float, PeerId, int]]] = {}
        self.runs: dict[str, list[ev.RunRequested]] = {}
        self.receipts: dict[str, ev.ReceiptAccepted] = {}
        self.takeovers: list[tuple[PeerId, str]] = []
        self.submissions: dict[str, bool] = {}
        self.router.on_emit = self._on_emit
        self.announce(self.peers)

    @property
    def now(self) -> float:
        return self.router.now

    def announce(self, live: list[PeerId], to: list[PeerId] | None = None) -> None:
        members = tuple(Member(p, self.exec_cfg.ad(), ROLES) for p in live)
        for p in to or live:
            if p in self.router.alive:
                self.router.inject(p, MembersChanged(members))

    def live(self) -> list[PeerId]:
        return [p for p in self.peers if p in self.router.alive]

    def kill(self, peer: PeerId, detect_s: float = 2.0) -> None:
        """Crash `peer`; the others learn of it `detect_s` later, staggered per node."""
        self.router.kill(peer)
        live = self.live()
        for i, p in enumerate(live):
            delay = detect_s + 0.05 * (i % 7)
            self.router.engine.after(delay, lambda p: self.announce(self.live(), [p]), p)

    def _on_emit(self, t: float, peer: PeerId, event: Any) -> None:
        if isinstance(event, ev.RunRequested):
            cid = event.capsule.id
            self.started.setdefault(cid, []).append((t, peer, event.token))
            self.runs.setdefault(cid, []).append(event)
            d = self.rng.uniform(*self.run_s)
            args = (peer, cid, event.token, t, output_names(event.capsule.spec))
            self.router.engine.after(d, self._exit, args)
        elif isinstance(event, ev.ReceiptAccepted):
            self.accepted.setdefault(event.capsule_id, []).append((t, peer, event.token))
            self.receipts[event.capsule_id] = event
        elif isinstance(event, ev.CapsuleFinished):
            self.finished.setdefault(event.capsule_id, []).append((peer, event.state))
        elif isinstance(event, ev.CapsuleLeased):
            self.leased.setdefault(event.capsule_id, []).append(event.token)
        elif isinstance(event, ev.CustodyTakenOver):
            self.takeovers.append((peer, event.capsule_id))
        elif isinstance(event, ev.SubmissionAccepted):
            self.submissions[event.capsule_id] = True
        elif isinstance(event, ev.SubmissionRejected):
            self.submissions[event.capsule_id] = False

    def _exit(self, args: tuple[PeerId, str, int, float, tuple[str, ...]]) -> None:
        peer, cid, token, t0, names = args
        if peer not in self.router.alive:
            return
        # One stored output per declared name, distinct per attempt (as a real run's).
        outs = tuple(capsule_cid(f"{cid}/{token}/{n}".encode()) for n in names) or (
            capsule_cid(f"{cid}/{token}".encode()),
        )
        self.router.inject(peer, CapsuleExited(cid, token, self.exit_status(cid), outs, "",
                                               t0, self.now))  # fmt: skip

    def submit(self, spec: CapsuleSpec, via: PeerId | None = None, nonce: int = 0) -> Capsule:
        via = via or self.rng.choice(self.live())
        cap = Capsule.sign(self.keys[via], spec, self.now, nonce)
        self.router.inject(via, SubmitCapsule(cap, self.chains[via]))
        return cap

    def leader_of(self, cid: str) -> PeerId:
        for core in self.cores.values():
            if core.me in self.router.alive:
                from overlay.capsule.spec import capsule_key

                return core.view.leader(capsule_key(cid), 3)
        raise AssertionError("no live node")

    def final_state(self, cid: str) -> State | None:
        rec = self.cores[self.leader_of(cid)].custody.record(cid)
        return rec.state if rec else None

    def run_until_done(self, cids: list[str], limit_s: float, step_s: float = 5.0) -> None:
        end = self.now + limit_s
        while self.now < end:
            self.router.run_for(step_s)
            if all(self.final_state(c) in TERMINAL for c in cids):
                # let the last acks settle
                self.router.run_for(5.0)
                return


def spec(i: int, **kw: Any) -> CapsuleSpec:
    return CapsuleSpec(name=f"job{i}", command=("work", str(i)), maxretries=5, **kw)


def spread_victims(c: Cluster, cids: list[str], peers: Iterable[PeerId], n: int) -> list[PeerId]:
    """Up to `n` of `peers`, at most one custodian of any capsule among them: killing a
    majority of a custody configuration blocks its capsules until one returns
    (docs/capsules.md, "Custody epochs"), which is not what these tests are about."""
    view = c.cores[c.leader_of(cids[0])].view
    sets = [view.closest(capsule_key(x), 3) for x in cids]
    victims: list[PeerId] = []
    for p in peers:
        if len(victims) < n and all(sum(q in s for q in (*victims, p)) <= 1 for s in sets):
            victims.append(p)
    return victims


def assert_exactly_once(c: Cluster, cids: list[str], seed: int) -> None:
    for cid in cids:
        acc = c.accepted.get(cid, [])
        assert len(acc) == 1, f"seed={seed} capsule {cid} accepted {len(acc)} receipts: {acc}"
        assert c.final_state(cid) is State.SUCCEEDED, f"seed={seed} {cid} {c.final_state(cid)}"
        tokens = c.leased.get(cid, [])
        assert tokens == sorted(set(tokens)), f"seed={seed} tokens reused/decreased: {tokens}"


@pytest.mark.parametrize("seed", [1])
def test_200_capsules_finish_with_exactly_one_receipt(seed: int) -> None:
    c = Cluster(30, seed)
    cids = []
    for i in range(200):
        c.router.run_for(0.05)
        cids.append(c.submit(spec(i)).id)
    c.run_until_done(cids, 600)
    assert all(c.submissions.get(x) for x in cids), f"seed={seed}"
    assert_exactly_once(c, cids, seed)


def _aggregate(c: Cluster, part: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for core in c.cores.values():
        for k, v in getattr(core, part).stats.items():
            total[k] = total.get(k, 0) + v
    return total


@pytest.mark.parametrize("seed", [2, 3])
def test_killed_executors_are_released_and_capsules_finish(seed: int) -> None:
    c = Cluster(30, seed, run_s=(6.0, 12.0))
    cids = [c.submit(spec(i)).id for i in range(60)]
    c.router.run_for(4.0)
    running: dict[PeerId, None] = {}
    for cid in cids:
        for _, peer, _ in c.started.get(cid, []):
            running[peer] = None
    victims = spread_victims(c, cids, running, 3)
    assert victims, f"seed={seed}: nothing started"
    for v in victims:
        c.kill(v)
    c.run_until_done(cids, 600)
    assert_exactly_once(c, cids, seed)
    # Capsules that were running on a victim got a new lease with a higher token.
    moved = [x for x in cids if any(p in victims for _, p, _ in c.started[x][:1])]
    assert moved, f"seed={seed}"
    for x in moved:
        assert len(c.started[x]) >= 2 and c.started[x][-1][2] > c.started[x][0][2], f"seed={seed}"
        assert c.accepted[x][0][1] not in victims


@pytest.mark.parametrize("seed", [4, 5])
def test_killed_leaders_hand_custody_to_another_custodian(seed: int) -> None:
    c = Cluster(30, seed, run_s=(5.0, 10.0))
    cids = [c.submit(spec(i)).id for i in range(60)]
    c.router.run_for(3.0)
    leaders: dict[PeerId, None] = {}
    for cid in cids:
        leaders[c.leader_of(cid)] = None
    victims = spread_victims(c, cids, leaders, 4)
    for v in victims:
        c.kill(v)
    c.run_until_done(cids, 600)
    assert_exactly_once(c, cids, seed)
    taken = {cid for _, cid in c.takeovers}
    lost = [x for x in cids if x in taken]
    assert lost, f"seed={seed}: no takeover happened"
    for x in cids:
        assert c.leader_of(x) not in victims


PIPELINE: dict[str, Any] = {
    "name": "pipeline",
    "capsules": [
        {"name": "e", "command": ["report"], "dependencies": ["c", "d"], "outputs": ["report.md"]},
        {"name": "a", "command": ["fetch"], "outputs": ["raw.csv"]},
        {"name": "b", "command": ["clean"], "dependencies": ["a"], "outputs": ["clean.csv"]},
        {"name": "c", "function": "stats", "dependencies": ["b"], "outputs": ["stats/"]},
        {"name": "d", "command": ["fit"], "dependencies": ["b"], "outputs": ["model.bin", "log"]},
    ],
}  # fmt: skip
EDGES = (("b", "a"), ("c", "b"), ("d", "b"), ("e", "cd"))


def _submit_pipeline(c: Cluster) -> dict[str, str]:
    via = c.peers[0]
    caps = Workflow.from_dict(PIPELINE).sign(c.keys[via], c.now)
    for cap in reversed(caps):  # children first: they must wait for their parents
        c.router.inject(via, SubmitCapsule(cap, c.chains[via]))
    return {cap.spec.name: cap.id for cap in caps}


@pytest.mark.parametrize("seed", [7])
def test_five_step_workflow_passes_outputs_to_inputs_in_dependency_order(seed: int) -> None:
    c = Cluster(30, seed, run_s=(1.0, 3.0))
    ids = _submit_pipeline(c)
    c.run_until_done(list(ids.values()), 300)
    assert_exactly_once(c, list(ids.values()), seed)
    start = {n: c.started[i][0][0] for n, i in ids.items()}
    end = {n: c.accepted[i][0][0] for n, i in ids.items()}
    for child, parents in EDGES:
        for p in parents:
            assert start[child] >= end[p], f"seed={seed} {child} started before {p} finished"
    # Each step's run got exactly its parents' accepted outputs, by name, parents in
    # dependency order; a function parent's result.json comes first.
    for child, parents in (("a", ""), *EDGES):
        want = []
        for p in parents:
            r = c.receipts[ids[p]].receipt
            spec = next(x for x in PIPELINE["capsules"] if x["name"] == p)
            names = (["result.json"] if "function" in spec else []) + spec["outputs"]
            assert len(r.outputs) == len(names), f"seed={seed}"
            pairs = zip(names, r.outputs, strict=True)
            want += [ParentOutput(ids[p], p, n, cid) for n, cid in pairs]
        for run in c.runs[ids[child]]:
            assert list(run.parent_outputs) == want, f"seed={seed} {child}: {run.parent_outputs}"
        assert set(c.runs[ids[child]][-1].input_cids) == {o.cid for o in want}
        # Custody replicated (and so persisted) the resolved inputs on every custodian.
        holders = [core.custody.record(ids[child]) for core in c.cores.values()]
        held = [h.parent_outputs for h in holders if h is not None]
        assert len(held) >= 3 and all(h == (tuple(want) if parents else None) for h in held)


@pytest.mark.parametrize("seed", [9])
def test_failed_middle_step_fails_everything_downstream_with_the_reason(seed: int) -> None:
    c = Cluster(20, seed, run_s=(1.0, 2.0),
                exit_status=lambda cid: 3 if cid == ids["b"] else 0)  # fmt: skip
    ids: dict[str, str] = {}
    ids.update(_submit_pipeline(c))
    c.run_until_done(list(ids.values()), 300)
    state = {n: c.final_state(i) for n, i in ids.items()}
    assert state == {"a": State.SUCCEEDED, "b": State.FAILED, "c": State.FAILED,
                     "d": State.FAILED, "e": State.FAILED}, f"seed={seed}"  # fmt: skip
    for n in "cde":
        assert ids[n] not in c.started, f"seed={seed}: {n} ran"

    def reason(n: str) -> str:
        rec = c.cores[c.leader_of(ids[n])].custody.record(ids[n])
        assert rec is not None
        return rec.reason

    assert reason("c") == f"dependency {ids['b']} (b) failed: exit status 3"
    via_c = f"dependency {ids['c']} (c) failed: dependency {ids['b']} (b) failed"
    via_d = f"dependency {ids['d']} (d) failed: dependency {ids['b']} (b) failed"
    assert reason("e").startswith((via_c, via_d)), reason("e")


def test_failed_dependency_fails_the_dependants() -> None:
    c = Cluster(10, 8, run_s=(1.0, 2.0), exit_status=lambda cid: 1 if cid == bad[0] else 0)
    bad: list[str] = []
    wf = Workflow.from_dict([
        {"nodename": "a", "funcname": "fail"},
        {"nodename": "b", "funcname": "next", "conditions": {"dependencies": ["a"]}},
    ])  # fmt: skip
    caps = wf.sign(c.keys[c.peers[0]], c.now)
    bad.append(caps[0].id)
    for cap in caps:
        c.router.inject(c.peers[0], SubmitCapsule(cap, c.chains[c.peers[0]]))
    c.run_until_done([x.id for x in caps], 120)
    assert c.final_state(caps[0].id) is State.FAILED
    assert c.final_state(caps[1].id) is State.FAILED
    rec = c.cores[c.leader_of(caps[1].id)].custody.record(caps[1].id)
    assert rec is not None and rec.reason == f"dependency {caps[0].id} (a) failed: exit status 1"
    assert caps[1].id not in c.started
