"""Hypothesis state machine over a 6-node capsule cluster (real cores, sim router).

Rules submit and replay capsules, advance virtual time, finish attempts (including
stale ones whose lease was re-offered), hang executors (they stop heartbeating), crash
nodes for good (the others learn it at once), crash *every* custodian of a capsule at
once and restart them from their persisted records (before the colony notices),
restart long-dead nodes from disk, and **partition** the nodes into two sides (messages
across the cut dropped, each side's membership view only its own side, so the sides
compute different custodian sets) and heal. Each node's "disk" is a dict fed by its
`CustodyRecordChanged` events, in effect order, exactly as the runtime writes them.
Invariants after every step:
- per capsule, the fencing tokens of committed lease offers strictly increase;
- no node's highest token seen for a capsule (`max_token`) ever decreases, across
  restarts;
- at most one receipt is accepted per capsule, across all nodes;
- a finished record's receipt token equals its record token;
- every outcome a live node reports (`Custody.report`: the copy it knows committed) is
  one custody committed (`CapsuleFinished`, its receipt accepted or finished): a
  deposed leader's own run is never reported (docs/capsules.md, "Deposed copies");
- every live node's disk holds exactly its in-memory custody records (write-ahead:
  nothing a node acted on is missing from its disk), and a restarted node's records
  equal what it held when it crashed.
"""

from __future__ import annotations

import random
from typing import Any

from helpers.core_net import CoreNet
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from overlay.capsule import events as ev
from overlay.capsule.core import CapsuleCore, SubmitCapsule
from overlay.capsule.custody import CustodyConfig
from overlay.capsule.durable import DurableRecord, record_key
from overlay.capsule.executor import CapsuleExited, ExecutorConfig
from overlay.capsule.members import Member, MembersChanged
from overlay.capsule.messages import Heartbeat
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.crypto import KeyPair
from overlay.core.effects import Effect, Send
from overlay.core.ids import PeerId

N = 6
#: Simulated seconds between *permanent* crashes: more than the custody takeover sync
#: window. Crashes followed by a restart from disk need no spacing.
CRASH_SPACING_S = 5.0


class Hangable:
    def __init__(self, core: CapsuleCore) -> None:
        self.core = core
        self.hung = False

    def handle(self, inp: Any, now: float) -> list[Effect]:
        out = self.core.handle(inp, now)
        if self.hung:
            out = [e for e in out if not (isinstance(e, Send) and isinstance(e.msg, Heartbeat))]
        return out


class CustodyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.router = CoreNet(delay_s=0.01, rng=random.Random(0))
        self.keys = [KeyPair(bytes([i + 1]) * 32) for i in range(N)]
        self.peers = [k.peer_id for k in self.keys]
        self.cfg = ExecutorConfig(slots=2)
        self.wrappers: dict[PeerId, Hangable] = {}
        self.disks: dict[PeerId, dict[bytes, bytes]] = {p: {} for p in self.peers}
        for k in self.keys:
            w = Hangable(self.new_core(k))
            self.wrappers[k.peer_id] = w
            self.router.add(k.peer_id, w)
        self.router.on_emit = self.on_emit
        self.caps: list[Capsule] = []
        self.last_crash = -CRASH_SPACING_S
        #: peer -> side of the current partition (None: no partition).
        self.side: dict[PeerId, int] | None = None
        self.token_seen: dict[tuple[PeerId, str], int] = {}
        self.finished_runs: set[int] = set()
        self.announce()

    def new_core(self, k: KeyPair) -> CapsuleCore:
        return CapsuleCore(k.peer_id, k, custody=CustodyConfig(), executor=self.cfg)

    def on_emit(self, t: float, peer: PeerId, event: Any) -> None:
        if isinstance(event, ev.CustodyRecordChanged):
            disk = self.disks[peer]
            if event.record is None:
                disk.pop(event.capsule_id, None)
            else:
                disk[event.capsule_id] = event.record

    def restart(self, p: PeerId) -> None:
        """A fresh process for `p` that restores custody from its disk (kill -9 + start)."""
        before = {r.capsule_id: r for r in self.wrappers[p].core.custody.records()}
        core = self.new_core(self.keys[self.peers.index(p)])
        skipped = core.restore(list(self.disks[p].values()), self.router.now)
        assert skipped == [], skipped
        after = {r.capsule_id: r for r in core.custody.records()}
        assert after == before, "restored custody differs from what the node held"
        self.wrappers[p] = Hangable(core)
        self.router.revive(p, self.wrappers[p])

    def live(self) -> list[PeerId]:
        return [p for p in self.peers if p in self.router.alive]

    def announce(self) -> None:
        """Each live node learns the live members it can reach (its side of a cut)."""
        side = self.side
        for s in (0, 1) if side is not None else (0,):
            group = [p for p in self.live() if side is None or side.get(p, 0) == s]
            members = MembersChanged(tuple(Member(p, self.cfg.ad()) for p in group))
            for p in group:
                self.router.inject(p, members)

    @rule(via=st.integers(0, N - 1), retries=st.integers(0, 3), wait=st.sampled_from([0, 20]))
    def submit(self, via: int, retries: int, wait: int) -> None:
        live = self.live()
        p = live[via % len(live)]
        spec = CapsuleSpec(command=("x",), maxretries=retries, maxwaittime_s=wait)
        cap = Capsule.sign(self.keys[self.peers.index(p)], spec, 0.0, len(self.caps))
        self.caps.append(cap)
        self.router.inject(p, SubmitCapsule(cap))

    @precondition(lambda self: self.caps)
    @rule(i=st.integers(0, 1000), via=st.integers(0, N - 1))
    def replay(self, i: int, via: int) -> None:
        live = self.live()
        self.router.inject(live[via % len(live)], SubmitCapsule(self.caps[i % len(self.caps)]))

    @rule(dt=st.floats(0.05, 8.0))
    def advance(self, dt: float) -> None:
        self.router.run_for(dt)

    @rule(i=st.integers(0, 1000), status=st.sampled_from([0, 0, 1]))
    def finish(self, i: int, status: int) -> None:
        runs = [(n, p, e) for n, (_, p, e) in enumerate(self.router.emitted)
                if isinstance(e, ev.RunRequested) and n not in self.finished_runs
                and p in self.router.alive]  # fmt: skip
        if not runs:
            return
        n, p, run = runs[i % len(runs)]
        self.finished_runs.add(n)
        self.router.inject(p, CapsuleExited(run.capsule.id, run.token, status))

    @rule(i=st.integers(0, N - 1))
    def hang(self, i: int) -> None:
        w = self.wrappers[self.peers[i]]
        w.hung = not w.hung

    # Fault model: custody is replicated to a majority of k_c = 3 custodians and not
    # yet persisted, so it survives one crash at a time, provided the takeover sync
    # (2 s) can copy the record to the replacement custodian before the next crash.
    # Back-to-back crashes of every custodian lose the record and a new custodian set
    # restarts fencing tokens at 1 (found by this test; fixed only once custody
    # records are persisted or tokens carry an epoch — see docs/capsules.md gaps).
    @precondition(
        lambda self: len(self.live()) > 3 and self.router.now - self.last_crash > CRASH_SPACING_S
    )
    @rule(i=st.integers(0, N - 1))
    def crash(self, i: int) -> None:
        live = self.live()
        self.router.kill(live[i % len(live)])
        self.last_crash = self.router.now
        self.announce()

    # Every custodian of one capsule crashes at once (power cut of a rack) and restarts
    # from disk `down_s` later, before the colony's membership noticed (no announce
    # while they are down, so no one else starts a fresh record for the capsule).
    @precondition(lambda self: self.caps)
    @rule(i=st.integers(0, 1000), down_s=st.sampled_from([0.0, 0.5, 3.0, 10.0]))
    def crash_all_custodians(self, i: int, down_s: float) -> None:
        cap = self.caps[i % len(self.caps)]
        view = self.wrappers[self.live()[0]].core.view
        victims = [p for p in view.closest(cap.key, 3) if p in self.router.alive]
        for p in victims:
            self.router.kill(p)
        self.router.run_for(down_s)
        for p in victims:
            self.restart(p)
        self.announce()

    # A node that crashed for good comes back from its disk, possibly much later.
    @precondition(lambda self: len(self.live()) < N)
    @rule(i=st.integers(0, N - 1))
    def restart_dead(self, i: int) -> None:
        dead = [p for p in self.peers if p not in self.router.alive]
        self.restart(dead[i % len(dead)])
        self.announce()

    @invariant()
    def disk_holds_what_memory_holds(self) -> None:
        for p in self.live():
            custody = self.wrappers[p].core.custody
            want = {}
            for rec in custody.records():
                e = custody._entries[rec.capsule_id]
                durable = DurableRecord(rec, e.chain, e.max_token, e.promise)
                want[record_key(rec.capsule_id)] = durable.to_bytes()
            assert self.disks[p] == want, f"{p.short()}: disk and memory differ"

    @invariant()
    def tokens_strictly_increase_per_capsule(self) -> None:
        seen: dict[str, int] = {}
        for _, _, e in self.router.emitted:
            if isinstance(e, ev.CapsuleLeased):
                assert e.token > seen.get(e.capsule_id, 0), f"token {e.token} reused/decreased"
                seen[e.capsule_id] = e.token

    @invariant()
    def max_tokens_never_decrease(self) -> None:
        # A record's own token may go down: a higher ballot's record supersedes an
        # uncommitted version whose offer (with a higher token) never left. The highest
        # token a node issued or saw never does, so it never issues one again.
        for p, w in self.wrappers.items():
            for rec in w.core.custody.records():
                k = (p, rec.capsule_id)
                max_token = w.core.custody._entries[rec.capsule_id].max_token
                assert max_token >= self.token_seen.get(k, 0)
                self.token_seen[k] = max_token
                if rec.receipt is not None:
                    assert rec.receipt.token == rec.token

    @invariant()
    def reported_outcomes_are_committed(self) -> None:
        finished: set[tuple[str, str]] = set()
        accepted: set[tuple[str, int, PeerId]] = set()
        for _, _, e in self.router.emitted:
            if isinstance(e, ev.CapsuleFinished):
                # A takeover of a finished record commits it again and says so with
                # CapsuleFinished only (its receipt was accepted before, maybe never
                # announced: the old leader died between committing and announcing).
                finished.add((e.capsule_id, e.state))
                if e.receipt is not None:
                    accepted.add((e.capsule_id, e.receipt.token, e.receipt.executor))
            elif isinstance(e, ev.ReceiptAccepted):
                accepted.add((e.capsule_id, e.receipt.token, e.receipt.executor))
        for p in self.live():
            for rep in self.wrappers[p].core.custody.reports():
                rec = rep.record
                if rec is None or not rec.terminal:
                    continue
                cid = rec.capsule_id
                assert (cid, rec.state.value) in finished, f"{p.short()} reports {cid} " \
                    f"{rec.state.value}, never committed"
                r = rec.receipt
                assert r is None or (cid, r.token, r.executor) in accepted, \
                    f"{p.short()} reports a receipt of {cid} custody never accepted"

    @invariant()
    def at_most_one_accepted_receipt(self) -> None:
        count: dict[str, int] = {}
        for _, _, e in self.router.emitted:
            if isinstance(e, ev.ReceiptAccepted):
                count[e.capsule_id] = count.get(e.capsule_id, 0) + 1
                assert count[e.capsule_id] == 1, f"{e.capsule_id} accepted twice"


CustodyMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_custody_state_machine = CustodyMachine.TestCase


class PartitionMachine(CustodyMachine):
    """The same cluster and invariants, plus partitions and heals."""

    # A partition: the nodes split into two sides; messages across the cut are lost
    # and each side's membership view holds only its own side (gossip on each side
    # declares the other side dead), so the two sides compute different custodian
    # sets for the same capsule. Later rules (crash, restart) keep the cut. No cut
    # while a Submit is unacknowledged: its origin retries it, and a retry into a side
    # that holds no copy is a replay during the cut (see `replay` below).
    @precondition(lambda self: not any(self.wrappers[p].core.origin._pending
                                       for p in self.live()))  # fmt: skip
    @rule(mask=st.integers(1, (1 << N) - 2))
    def partition(self, mask: int) -> None:
        side = {p: (mask >> i) & 1 for i, p in enumerate(self.peers)}
        self.side = side
        self.router.link_up = lambda s, d: side[s] == side[d]
        self.announce()

    @precondition(lambda self: self.side is not None)
    @rule()
    def heal(self) -> None:
        self.side = None
        self.router.link_up = None
        self.announce()

    # No replays *during* a cut: a Submit replayed into a side that holds no copy of the
    # record cannot be told from a new capsule and starts a second lineage, a limit of
    # any design without agreement on membership (docs/capsules.md, "Custody epochs").
    @precondition(lambda self: self.caps and self.side is None)
    @rule(i=st.integers(0, 1000), via=st.integers(0, N - 1))
    def replay(self, i: int, via: int) -> None:
        super().replay(i, via)


PartitionMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_custody_state_machine_with_partitions = PartitionMachine.TestCase


class RetryMachine(PartitionMachine):
    """Partitions also while Submits are unacknowledged: the origin's retries land in
    whichever side its view now names, possibly one holding no copy. Every retry
    carries the origin's initial configuration, so such a side waits instead of
    starting a second lineage (docs/capsules.md, "Custody epochs", 0)."""

    @rule(mask=st.integers(1, (1 << N) - 2))
    def partition_during_retries(self, mask: int) -> None:
        PartitionMachine.partition(self, mask)

    # No user replays: a capsule submitted again (through any node, or by its origin
    # after it stopped retrying) carries the configuration of *that* submission's
    # view; the stated limit (docs/capsules.md, "What it costs in liveness").
    @precondition(lambda self: False)
    @rule(i=st.integers(0, 1000), via=st.integers(0, N - 1))
    def replay(self, i: int, via: int) -> None:
        super().replay(i, via)


RetryMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_custody_state_machine_with_retries_across_cuts = RetryMachine.TestCase


def test_partition_gives_each_side_a_majority_of_a_different_custodian_set() -> None:
    """The smallest example the partition rules found, replayed step by step.

    Custodians of the capsule are nodes 4 (leader, also the executor), 5 and 3. The
    cut puts 4 with node 0: their view's custodian set is {4, 0} (majority 2: both),
    the other side's is {5, 3, 1} (5 leads, syncs with 3 and 1). Side B sees no
    heartbeat, expires the lease and leases it again with token 2; side A's attempt
    ends and 4 accepts its receipt with 0's ack; side B's attempt ends and 5 accepts
    a second receipt.
    """
    m = PartitionMachine()
    m.submit(via=0, retries=3, wait=0)
    m.advance(dt=1.0)
    cap = m.caps[0]
    custodians = m.wrappers[m.peers[0]].core.view.closest(cap.key, 3)
    assert [m.peers.index(p) for p in custodians] == [4, 5, 3]
    m.partition(mask=(1 << 0) | (1 << 4))
    m.advance(dt=8.0)
    m.advance(dt=2.0)
    m.finish(i=0, status=0)
    m.finish(i=0, status=0)
    m.advance(dt=2.0)
    m.tokens_strictly_increase_per_capsule()
    m.at_most_one_accepted_receipt()  # fails today: receipts for tokens 1 and 2
