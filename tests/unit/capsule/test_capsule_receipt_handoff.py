"""A leader back with an empty store before anyone noticed gets the copy from its followers.

Campaign seed 311 without amnesia: the leader of a running capsule crashed, lost its
disk and came back 2.1 s later, faster than failure detection, so no view changed and
no one took over. Its followers still counted its old ack of the current version, so
they never handed their copies over again; the executor's receipt reached only nodes
that do not act on it, and the capsule stayed running. A follower now hands its copy
and the receipt to the leader when the executor sends that receipt again.
"""

from __future__ import annotations

from helpers.capsule_colony import capsule_colony, led_by_last_running_elsewhere, restart_empty
from helpers.core_net import CoreNet

from overlay.capsule import events as ev
from overlay.capsule.core import SubmitCapsule
from overlay.capsule.executor import CapsuleExited
from overlay.capsule.leases import State
from overlay.capsule.messages import ReceiptMsg
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.effects import Received


def test_followers_hand_a_retried_receipt_and_their_copy_to_a_leader_that_forgot() -> None:
    net = CoreNet(delay_s=0.01, max_events=20_000)
    # The last node executes nothing; a capsule it leads keeps running through its restart.
    keys, cores, members = capsule_colony(net, key_base=21, executors=2)
    cap, run, who = led_by_last_running_elsewhere(net, keys, cores)
    leader = keys[-1].peer_id
    # The leader restarts with an empty store; the others' views never change.
    fresh = restart_empty(net, keys[-1], members)
    assert fresh.custody.record(cap.id) is None
    net.inject(who, CapsuleExited(run.capsule.id, run.token, 0))
    net.run_for(10)
    followers = [p for p in cores if p != leader]
    assert sum(cores[p].custody.stats.get("receipt_handoffs", 0) for p in followers) >= 1
    for core in (fresh, *(cores[p] for p in followers)):
        rec = core.custody.record(cap.id)
        assert rec is not None and rec.state is State.SUCCEEDED, rec and rec.state


def test_a_follower_hands_a_retried_receipt_over_at_most_once_per_heartbeat() -> None:
    """Unbounded, a follower whose computed leader was not leading (views differ) got
    the receipt back from it (`receipts_forwarded`), handed it over again, got it back…
    at message speed: campaign seeds 414 and 874 at stop 40, 10^6 messages in 0.3
    simulated s. Whoever sends it again (the executor, or a custodian forwarding it:
    seed 989 needs those), one handoff per heartbeat interval (2 s)."""
    net = CoreNet(delay_s=0.01, max_events=20_000)
    keys, cores, _ = capsule_colony(net, key_base=61)
    cap = Capsule.sign(keys[0], CapsuleSpec(command=("run",)), 0.0, nonce=1)
    net.inject(keys[0].peer_id, SubmitCapsule(cap))
    net.run_for(1)
    (run,) = net.of(ev.RunRequested)
    who = next(p for _, p, e in net.emitted if e is run)
    leader = next(p for p, c in cores.items() if c.custody.is_leading(cap.id))
    net.hold = lambda src, dst, msg: isinstance(msg, ReceiptMsg)  # nobody gets it yet
    net.inject(who, CapsuleExited(run.capsule.id, run.token, 0))
    receipt = next(m for src, _, m in net.held if src == who).receipt
    follower = next(p for p in cores if p not in (leader, who))
    other = next(p for p in cores if p not in (follower, who))
    core = cores[follower]
    for sender in (who, other, who, other):  # the first is news, the rest come again
        net.inject(follower, Received(sender, ReceiptMsg(receipt)))
    assert core.custody.stats.get("receipt_handoffs", 0) == 1
    net.run_for(2.1)  # a heartbeat interval later
    net.inject(follower, Received(other, ReceiptMsg(receipt)))
    assert core.custody.stats.get("receipt_handoffs", 0) == 2
