"""Failure detection: probe rounds, direct and indirect probes, RTT (SWIM §4.1, §4.3).

Every `probe_interval × health` one member is probed, round-robin over a shuffled list
(the order is kept by gossip/member_table.py). No ack within `probe_timeout × health`
→ `indirect_checks` members are asked to probe it (ping-req); helpers nack when the
target does not answer (Lifeguard §IV-A). No ack by the end of the interval → `conclude`
returns the target, and gossip/transitions.py signs a suspicion. Missing nacks and
failed probes raise the local health score, acks lower it (gossip/awareness.py).

Measured probe RTTs feed a per-member EWMA (`RTT_ALPHA`) and Vivaldi coordinates
(gossip/coordinates.py); both are float columns of the member table (8 bytes per float,
gossip/member_table.py `FloatColumn`), bounded by `max_coords`. Relayed pings are
bounded by `max_relays`. The prober never changes a member's state.
"""

from __future__ import annotations

from gossip import coordinates
from gossip.awareness import Awareness
from gossip.cell import Cell
from gossip.coordinates import Coord
from gossip.counters import count
from gossip.dissemination import Dissemination
from gossip.members import MemberState
from gossip.messages import Ack, Nack, Ping, PingReq, Update
from overlay.core.effects import CancelTimer, Effect, Send, SetTimer
from overlay.core.ids import PeerId

#: Weight of a new probe RTT sample in the per-member EWMA.
RTT_ALPHA = 0.2


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


class Prober:
    """The probe cycle, the ping / ack / nack / ping-req handlers, RTT and coordinates."""

    __slots__ = ("_bq_index", "_uq_index", "awareness", "config", "coord", "coords", "gate",
                 "local", "probe", "relays", "rng", "rtt", "seq", "spread", "stats",
                 "table")  # fmt: skip

    def __init__(self, cell: Cell, *, spread: Dissemination, awareness: Awareness) -> None:
        self.local, self.table = cell.local, cell.table
        self.gate = cell.gate  # colony mode: introduce ourselves, never probe outsiders
        self.config, self.rng, self.stats = cell.config, cell.rng, cell.stats
        self.spread = spread  # what rides on our pings and acks
        # The broadcast queues' dicts (never replaced): a ping or ack asks whether both
        # are empty before calling `piggyback` (the steady state: they are).
        self._bq_index, self._uq_index = spread.bq._index, spread.uq._index
        self.awareness = awareness
        self.probe: ProbeRound | None = None
        self.seq = 0
        #: our seq -> (who asked, their seq, target): pings we relay for a ping-req.
        self.relays: dict[int, tuple[PeerId, int, PeerId]] = {}
        self.coord = Coord()
        #: Per member: the last coordinate it reported (vec…, height, error).
        self.coords = cell.table.column(coordinates.DIMENSIONS + 2)
        #: Per member: the EWMA of our probe RTTs to it.
        self.rtt = cell.table.column(1)

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    # ------------------------------------------------------------ the probe cycle

    def conclude(self) -> PeerId | None:
        """End the current round: the target if it failed (no ack), else None. Updates
        the health score either way (Lifeguard §IV-A)."""
        probe, self.probe = self.probe, None
        if probe is None or probe.acked:
            return None
        # Lifeguard §IV-A: missing nacks mean *we* may be the slow one.
        if probe.expected_nacks > 0:
            self.awareness.apply_delta(max(0, probe.expected_nacks - len(probe.nacks)))
        else:
            self.awareness.apply_delta(1)
        return probe.target

    def start_round(self, now: float, out: list[Effect]) -> None:
        """Re-arm the probe timer and ping the next member in probe order."""
        c = self.config
        # `Awareness.scale` written out (the same product), as is `_next_seq` below:
        # this runs once a probe interval at every node.
        mult = self.awareness.score + 1
        out.append(SetTimer("probe", now + c.probe_interval_s * mult))
        if self.local.leaving:
            return
        target = self.table.next_probe_target(self.rng)
        if target is None:
            return
        seq = self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.probe = ProbeRound(seq, target, now)
        buddy = self.table.accuse_of(target) if c.lifeguard else None
        if buddy is None and not (self._bq_index or self._uq_index):
            updates: tuple[Update, ...] = ()  # what `piggyback` gives with both queues empty
        else:
            updates = self.spread.piggyback(c.piggyback_bytes, buddy)
        if self.gate.admission is not None:  # colony mode (`introduce` is a no-op else)
            updates = self.gate.introduce(target, updates)
        out.append(Send(target, Ping(seq, target, updates, self.coord)))
        out.append(SetTimer("probe-timeout", now + c.probe_timeout_s * mult))

    def probe_timeout(self, out: list[Effect]) -> None:
        """No direct ack yet: ask `indirect_checks` alive members to probe (ping-req)."""
        probe = self.probe
        if probe is None or probe.acked or probe.helpers:
            return
        c = self.config
        helpers = self.table.sample(
            c.indirect_checks, (MemberState.ALIVE,), self.rng, exclude=probe.target
        )
        probe.helpers = tuple(helpers)
        probe.expected_nacks = len(helpers) if c.lifeguard else 0
        for h in helpers:
            out.append(
                Send(h, PingReq(probe.seq, probe.target, self.spread.piggyback(c.piggyback_bytes)))
            )
        if not helpers:
            probe.helpers = (self.local.me,)  # mark the indirect phase as done

    # ------------------------------------------------------------ messages

    def on_ack(self, peer: PeerId, msg: Ack, now: float, out: list[Effect]) -> None:
        probe = self.probe
        if probe is not None and msg.seq == probe.seq and not probe.acked:
            if peer == probe.target:
                probe.acked = True
                if self.awareness.score:  # at 0 (the usual), -1 changes nothing
                    self.awareness.apply_delta(-1)
                self._observe_rtt(peer, now - probe.sent, msg.coord)
            elif peer in probe.helpers:
                probe.acked = True
            out.append(CancelTimer("probe-timeout"))
            return
        relay = self.relays.get(msg.seq)
        if relay is not None and relay[2] == peer:
            del self.relays[msg.seq]
            out.append(CancelTimer(("relay", msg.seq)))
            out.append(Send(relay[0], Ack(relay[1])))
            return
        count(self.stats, "ack_unexpected")

    def on_nack(self, peer: PeerId, msg: Nack) -> None:
        probe = self.probe
        if probe is not None and msg.seq == probe.seq and peer in probe.helpers:
            probe.nacks.add(peer)
        else:
            count(self.stats, "nack_unexpected")

    def on_ping(self, peer: PeerId, msg: Ping, out: list[Effect]) -> None:
        target = msg.target
        # `is` first: a ping names the very PeerId object we are known by (no call).
        if target is not None and target is not self.local.me and target != self.local.me:
            count(self.stats, "ping_misdirected")
            return
        coord = msg.coord
        if coord is not None:  # members only (their coordinates are table columns)
            self.coords.put(peer, (*coord.vec, coord.height, coord.error),
                            self.config.max_coords, members_only=True)
        if self._bq_index or self._uq_index:
            out.append(Send(peer, Ack(msg.seq, self.spread.piggyback(self.config.piggyback_bytes),
                                      self.coord)))
        else:  # both queues empty: no updates to piggyback (`piggyback` would give ())
            out.append(Send(peer, Ack(msg.seq, (), self.coord)))

    def on_ping_req(self, peer: PeerId, msg: PingReq, now: float, out: list[Effect]) -> None:
        if msg.target == self.local.me:
            out.append(Send(peer, Ack(msg.seq)))
            return
        if self.gate.admission is not None and msg.target not in self.table:
            count(self.stats, "ping_req_non_member")  # colony mode: never probe outsiders
            return
        if len(self.relays) >= self.config.max_relays:
            count(self.stats, "relay_dropped")
            return
        seq = self._next_seq()
        self.relays[seq] = (peer, msg.seq, msg.target)
        piggyback = self.spread.piggyback(self.config.piggyback_bytes)
        updates = self.gate.introduce(msg.target, piggyback)
        out.append(Send(msg.target, Ping(seq, msg.target, updates)))
        out.append(SetTimer(("relay", seq), now + self.config.probe_timeout_s))

    def relay_expired(self, seq: int, out: list[Effect]) -> None:
        """The `("relay", seq)` timer: the target did not answer; nack the asker."""
        relay = self.relays.pop(seq, None)
        if relay is not None and self.config.lifeguard:
            out.append(Send(relay[0], Nack(relay[1])))

    # ------------------------------------------------------------ RTT and coordinates

    def rtt_estimate(self, peer: PeerId) -> float | None:
        """Measured RTT (EWMA) if we probed `peer`, else the Vivaldi prediction."""
        rtt = self.rtt.first(peer)
        if rtt is not None:
            return rtt
        coord = self.coord_of(peer)
        return None if coord is None else self.coord.distance_s(coord)

    def coord_of(self, peer: PeerId) -> Coord | None:
        """The last coordinate `peer` reported to us, if any."""
        row = self.coords.get(peer)
        if row is None:
            return None
        d = coordinates.DIMENSIONS
        return Coord(row[:d], row[d], row[d + 1])

    def forget(self, peer: PeerId) -> None:
        """`peer` left the table."""
        self.coords.pop(peer)
        self.rtt.pop(peer)

    def _observe_rtt(self, peer: PeerId, rtt_s: float, coord: Coord | None) -> None:
        # One slot lookup for "no RTT yet and the column is full" and the EWMA step.
        if not self.rtt.blend(peer, rtt_s, RTT_ALPHA, self.config.max_coords):
            count(self.stats, "rtt_dropped")
            return
        if coord is not None:
            self.coord = coordinates.update(self.coord, coord, rtt_s, self.rng)
            self.coords.put(peer, (*coord.vec, coord.height, coord.error),
                            self.config.max_coords)
