"""A leader whose view hides its peers for a moment must not shrink a configuration.

Seen in a 5-daemon partition run under load (docs/reliability.md): a leader whose view
held no other reachable member for a moment opened an epoch anyway (the hidden peers
still answered phase 1) and activated a configuration of itself alone. That step is
safe (activation is joint with the old configuration), but every later version then
commits on one copy: when that node died for good, no one could take the capsule over,
since phase 1 needs a majority of the newest configuration. A configuration is now
never smaller than the one it follows (`Replicator.config` pads the view's choice with
the current members), so the old majority can still take over.
"""

from __future__ import annotations

from helpers.capsule_colony import capsule_colony
from helpers.core_net import CoreNet

from overlay.capsule import events as ev
from overlay.capsule.core import CapsuleCore, SubmitCapsule
from overlay.capsule.executor import CapsuleExited
from overlay.capsule.leases import State
from overlay.capsule.members import Member, MembersChanged
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.crypto import KeyPair
from overlay.core.effects import PeerUnreachable
from overlay.core.ids import PeerId


def _colony() -> tuple[CoreNet, list[KeyPair], dict[PeerId, CapsuleCore], tuple[Member, ...]]:
    net = CoreNet(delay_s=0.01, max_events=20_000)
    keys, cores, members = capsule_colony(net, key_base=11)
    return net, keys, cores, members


def test_hidden_peers_do_not_shrink_the_configuration_and_the_rest_take_over() -> None:
    net, keys, cores, members = _colony()
    cap = Capsule.sign(keys[0], CapsuleSpec(command=("run",)), 0.0, nonce=7)
    net.inject(keys[0].peer_id, SubmitCapsule(cap))
    net.run_for(1)
    (run,) = net.of(ev.RunRequested)
    leader = next(p for p, c in cores.items() if c.custody.is_leading(cap.id))
    full = cores[leader].custody.record(cap.id).config  # type: ignore[union-attr]
    assert len(full) == 3
    # The leader's view hides both other custodians (refused dials under load), though
    # the network still carries their frames: they keep answering.
    for p in cores:
        if p != leader:
            net.feed(leader, PeerUnreachable(p))
    net.run_for(2)
    for p, core in cores.items():
        rec = core.custody.record(cap.id)
        assert rec is not None and len(rec.config) == 3, (p.short(), rec and rec.config)
    # The leader dies for good; the others learn it from their membership.
    net.kill(leader)
    rest = tuple(m for m in members if m.peer != leader)
    for m in rest:
        net.inject(m.peer, MembersChanged(rest))
    net.run_for(10)
    survivors = [p for p in cores if p != leader]
    assert any(cores[p].custody.is_leading(cap.id) for p in survivors)
    # The run goes on (or is leased again, if it ran on the dead leader) and finishes.
    who = next(p for _, p, e in net.emitted if e is run)
    runs = [(p, e) for _, p, e in net.emitted if isinstance(e, ev.RunRequested)]
    live = [(p, e) for p, e in runs if p != leader and (p != who or e is run)]
    assert live, "no run left on a surviving executor"
    p, r = live[-1]
    net.inject(p, CapsuleExited(r.capsule.id, r.token, 0))
    net.run_for(5)
    for p in survivors:
        rec = cores[p].custody.record(cap.id)
        assert rec is not None and rec.state is State.SUCCEEDED, (p.short(), rec and rec.state)


def _cut_off(nonce: int) -> tuple[CoreNet, dict[PeerId, CapsuleCore], tuple[Member, ...],
                                  PeerId, Capsule]:  # fmt: skip
    """A colony whose first node's gossip holds every other member as failed (it is
    cut off), and a capsule it could submit."""
    net, keys, cores, members = _colony()
    me = keys[0].peer_id
    alone = tuple(m for m in members if m.peer == me)
    net.inject(me, MembersChanged(alone, failed=len(members) - 1))
    cap = Capsule.sign(keys[0], CapsuleSpec(command=("run",)), 0.0, nonce=nonce)
    return net, cores, members, me, cap


def test_an_origin_cut_off_from_its_colony_defers_the_submission_until_it_is_back() -> None:
    # Campaign seed 72: a node partitioned from the rest fixed a capsule's initial
    # configuration as itself alone, acknowledged it on its own copy, then lost its
    # disk: an acknowledged capsule gone. Now it waits for a majority of the custodians
    # it would pick if the members it lost contact with were back.
    net, cores, members, me, cap = _cut_off(8)
    net.inject(me, SubmitCapsule(cap))
    net.run_for(5)
    assert not [m for src, _, m in net.sends if src == me]
    assert cores[me].origin.stats["submits_deferred"] == 1
    assert not net.of(ev.SubmissionAccepted) and not net.of(ev.SubmissionRejected)
    net.inject(me, MembersChanged(members))
    net.run_for(3)
    assert [e.capsule_id for e in net.of(ev.SubmissionAccepted)] == [cap.id]
    leader = next(p for p, c in cores.items() if c.custody.is_leading(cap.id))
    assert len(cores[leader].custody.record(cap.id).config) == 3  # type: ignore[union-attr]


def test_a_deferred_submission_is_rejected_with_the_reason_after_its_tries() -> None:
    net, cores, _, me, cap = _cut_off(9)
    net.inject(me, SubmitCapsule(cap))
    net.run_for(40)
    (rej,) = net.of(ev.SubmissionRejected)
    assert rej.capsule_id == cap.id
    assert rej.reason == "only 1 of 3 custodians reachable for 28 s (cut off from the colony?)"
    assert cores[me].origin.stats["submits_unplaced"] == 1


def test_a_colony_that_really_shrank_is_served() -> None:
    # The failed members reaped (or left, or moved to another cell): nothing to wait for.
    net, cores, members, me, cap = _cut_off(10)
    net.inject(me, MembersChanged(tuple(m for m in members if m.peer == me)))
    net.inject(me, SubmitCapsule(cap))
    net.run_for(2)
    assert [e.capsule_id for e in net.of(ev.SubmissionAccepted)] == [cap.id]
    assert cores[me].custody.record(cap.id).config == (me,)  # type: ignore[union-attr]
