"""A dead custodian's refused dials must not feed back into custody (no message storm).

In the daemon every frame posted to a peer whose dial fails comes back as
`PeerUnreachable` at once (a killed daemon on the same host refuses the connection).
Custody re-evaluates its records when a peer is hidden, and a leader whose record is
still joint with a configuration naming the dead peer sends it a `Replicate` on every
re-evaluation. If a report about a peer that is already hidden re-evaluated again, each
refused frame would produce the next one: 3 daemons exchanged ~10^4 frames in a minute,
the driver's inbox overflowed and dropped inputs (tests/integration/test_faults_kill9.py).
"""

from __future__ import annotations

from typing import Any

from helpers.capsule_colony import capsule_colony
from helpers.core_net import CoreNet

from overlay.capsule import events as ev
from overlay.capsule.core import CapsuleCore, SubmitCapsule
from overlay.capsule.executor import CapsuleExited
from overlay.capsule.leases import State
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.crypto import KeyPair
from overlay.core.effects import PeerUnreachable
from overlay.core.ids import PeerId


class RefusingNet(CoreNet):
    """A frame to a dead peer comes back to its sender as `PeerUnreachable` at once,
    as a refused dial does in the daemon's transport."""

    def _send(self, src: PeerId, dst: PeerId, msg: Any) -> None:
        if dst in self.alive:
            super()._send(src, dst, msg)
            return
        self.sends.append((src, dst, msg))
        self.engine.at(self.now, self._refused, (src, dst))

    def _refused(self, arg: tuple[PeerId, PeerId]) -> None:
        src, dst = arg
        if src in self.alive:
            self.inject(src, PeerUnreachable(dst))


def _colony(n: int = 3) -> tuple[RefusingNet, list[KeyPair], dict[PeerId, CapsuleCore]]:
    net = RefusingNet(delay_s=0.01, max_events=20_000)
    # The last node executes nothing: killing it loses no run, only a custodian.
    keys, cores, _ = capsule_colony(net, n, executors=n - 1)
    return net, keys, cores


def test_refused_frames_to_a_dead_custodian_do_not_feed_back() -> None:
    net, keys, cores = _colony()
    caps = [Capsule.sign(keys[0], CapsuleSpec(command=("run",)), 0.0, nonce=i) for i in range(4)]
    for cap in caps:
        net.inject(keys[0].peer_id, SubmitCapsule(cap))
    net.run_for(1)
    runs = net.of(ev.RunRequested)
    assert len(runs) == 4
    # kill -9 of a custodian that runs none of them: every other custodian learns it
    # from a refused frame and the reconfiguration sends to it while still joint.
    dead = keys[-1].peer_id
    assert all(p != dead for _, p, e in net.emitted if isinstance(e, ev.RunRequested))
    net.kill(dead)
    before = len(net.sends)
    for k in keys:
        if k.peer_id != dead:
            net.feed(k.peer_id, PeerUnreachable(dead))  # fails with "message storm" before
    net.run_for(3)
    to_dead = [m for m in net.sends[before:] if m[1] == dead]
    # A few re-sends per record (the replicate retry timer), not one per refusal.
    assert len(to_dead) <= 4 * len(caps) * 3, len(to_dead)
    for run in runs:
        who = next(p for _, p, e in net.emitted if e is run)
        net.inject(who, CapsuleExited(run.capsule.id, run.token, 0))
    net.run_for(2)
    live = [p for p in cores if p != dead]
    for cap in caps:
        assert all(cores[p].custody.record(cap.id).state is State.SUCCEEDED  # type: ignore[union-attr]
                   for p in live)  # fmt: skip
