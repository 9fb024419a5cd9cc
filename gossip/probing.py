"""Failure detection: probe rounds, direct and indirect probes, RTT (SWIM §4.1, §4.3).

Every `probe_interval × health` one member is probed, round-robin over a shuffled list
(newcomers are swapped into a random not-yet-probed slot, as memberlist does). No ack
within `probe_timeout × health` → `indirect_checks` members are asked to probe it
(ping-req); helpers nack when the target does not answer (Lifeguard §IV-A). No ack by
the end of the interval → a signed suspicion (gossip/accusations.py). Missing nacks and
failed probes raise the local health score, acks lower it (gossip/awareness.py).

Measured probe RTTs feed a per-member EWMA (`RTT_ALPHA`) and Vivaldi coordinates
(gossip/coordinates.py); both maps are bounded by `max_coords`. Relayed pings are
bounded by `max_relays`.
"""

from __future__ import annotations

from gossip import coordinates
from gossip.accusations import Accusations
from gossip.coordinates import Coord
from gossip.members import MemberState
from gossip.messages import Accuse, AccuseKind, Ack, Nack, Ping, PingReq
from gossip.swim_state import LIVE, RTT_ALPHA
from overlay.core.effects import CancelTimer, Effect, Send, SetTimer
from overlay.core.ids import PeerId


class ProbeRound:
    """One probe round: its target, when it was sent, helpers asked, nacks seen."""

    __slots__ = ("acked", "expected_nacks", "helpers", "nacks", "sent", "seq", "target")

    def __init__(self, seq: int, target: PeerId, sent: float) -> None:
        self.seq = seq
        self.target = target
        self.sent = sent
        self.acked = False
        self.helpers: tuple[PeerId, ...] = ()
        self.expected_nacks = 0
        self.nacks: set[PeerId] = set()  # membership tests only, never iterated


class Probing(Accusations):
    """The probe cycle and the ping / ack / nack / ping-req handlers."""

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _add_id(self, peer: PeerId) -> None:
        """Append, then swap into a random not-yet-probed slot (memberlist does the
        same): otherwise every node would probe newcomers in the same order."""
        ids = self._ids
        ids.append(peer)
        j = self.rng.randint(min(self._probe_idx, len(ids) - 1), len(ids) - 1)
        ids[-1], ids[j] = ids[j], ids[-1]

    def _next_probe_target(self) -> PeerId | None:
        ids = self._ids
        for _ in range(len(ids) + 1):
            if self._probe_idx >= len(ids):
                self._probe_idx = 0
                self.rng.shuffle(ids)
                if not ids:
                    return None
            peer = ids[self._probe_idx]
            self._probe_idx += 1
            if self.members[peer].state in LIVE:
                return peer
        return None

    def _probe_tick(self, now: float, out: list[Effect]) -> None:
        if self._probe is not None:
            self._conclude_probe(self._probe, now, out)
            self._probe = None
        c = self.config
        out.append(SetTimer("probe", now + self.awareness.scale(c.probe_interval_s)))
        if self.leaving:
            return
        target = self._next_probe_target()
        if target is None:
            return
        probe = self._probe = ProbeRound(self._next_seq(), target, now)
        buddy = self.members[target].accuse if c.lifeguard else None
        updates = self._introduce(target, self._piggyback(c.piggyback_bytes, buddy))
        out.append(Send(target, Ping(probe.seq, target, updates, self.coord)))
        out.append(SetTimer("probe-timeout", now + self.awareness.scale(c.probe_timeout_s)))

    def _probe_timeout(self, now: float, out: list[Effect]) -> None:
        probe = self._probe
        if probe is None or probe.acked or probe.helpers:
            return
        c = self.config
        helpers = self._sample(c.indirect_checks, (MemberState.ALIVE,), exclude=probe.target)
        probe.helpers = tuple(helpers)
        probe.expected_nacks = len(helpers) if c.lifeguard else 0
        for h in helpers:
            out.append(
                Send(h, PingReq(probe.seq, probe.target, self._piggyback(c.piggyback_bytes)))
            )
        if not helpers:
            probe.helpers = (self.me,)  # mark the indirect phase as done

    def _conclude_probe(self, probe: ProbeRound, now: float, out: list[Effect]) -> None:
        if probe.acked:
            return
        # Lifeguard §IV-A: missing nacks mean *we* may be the slow one.
        if probe.expected_nacks > 0:
            self.awareness.apply_delta(max(0, probe.expected_nacks - len(probe.nacks)))
        else:
            self.awareness.apply_delta(1)
        m = self.members.get(probe.target)
        if m is None or m.state not in LIVE:
            return
        self._count("probe_failed")
        acc = Accuse.create(self.keys, probe.target, m.incarnation, AccuseKind.SUSPECT)
        self._apply_suspect(m, acc, now, out)

    def _on_ack(self, peer: PeerId, msg: Ack, now: float, out: list[Effect]) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq and not probe.acked:
            if peer == probe.target:
                probe.acked = True
                self.awareness.apply_delta(-1)
                self._observe_rtt(peer, now - probe.sent, msg.coord)
            elif peer in probe.helpers:
                probe.acked = True
            out.append(CancelTimer("probe-timeout"))
            return
        relay = self._relays.get(msg.seq)
        if relay is not None and relay[2] == peer:
            del self._relays[msg.seq]
            out.append(CancelTimer(("relay", msg.seq)))
            out.append(Send(relay[0], Ack(relay[1])))
            return
        self._count("ack_unexpected")

    def _observe_rtt(self, peer: PeerId, rtt_s: float, coord: Coord | None) -> None:
        if peer not in self._rtt and len(self._rtt) >= self.config.max_coords:
            self._count("rtt_dropped")
            return
        old = self._rtt.get(peer)
        self._rtt[peer] = rtt_s if old is None else old + RTT_ALPHA * (rtt_s - old)
        if coord is not None:
            self.coord = coordinates.update(self.coord, coord, rtt_s, self.rng)
            self._remember_coord(peer, coord)

    def _remember_coord(self, peer: PeerId, coord: Coord) -> None:
        if peer in self._coords or len(self._coords) < self.config.max_coords:
            self._coords[peer] = coord

    def _on_ping(self, peer: PeerId, msg: Ping, out: list[Effect]) -> None:
        if msg.target is not None and msg.target != self.me:
            self._count("ping_misdirected")
            return
        if msg.coord is not None and peer in self.members:
            self._remember_coord(peer, msg.coord)
        updates = self._piggyback(self.config.piggyback_bytes)
        out.append(Send(peer, Ack(msg.seq, updates, self.coord)))

    def _on_ping_req(self, peer: PeerId, msg: PingReq, now: float, out: list[Effect]) -> None:
        if msg.target == self.me:
            out.append(Send(peer, Ack(msg.seq)))
            return
        if self.admission is not None and msg.target not in self.members:
            self._count("ping_req_non_member")  # colony mode: never probe outsiders
            return
        if len(self._relays) >= self.config.max_relays:
            self._count("relay_dropped")
            return
        seq = self._next_seq()
        self._relays[seq] = (peer, msg.seq, msg.target)
        out.append(
            Send(msg.target, Ping(seq, msg.target,
                                  self._introduce(msg.target,
                                                  self._piggyback(self.config.piggyback_bytes))))
        )
        out.append(SetTimer(("relay", seq), now + self.config.probe_timeout_s))

    def _on_nack(self, peer: PeerId, msg: Nack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq and peer in probe.helpers:
            probe.nacks.add(peer)
        else:
            self._count("nack_unexpected")
