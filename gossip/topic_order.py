"""Per-publisher order and replay refusal for one topic's user messages (sans-IO).

Plumtree delivers each payload once, in arrival order, and forgets ids after its
seen window. Users are promised more (docs/gossip.md "Topics in the daemon"):

- **Order per publisher.** Messages carry (epoch, seq) (gossip/topic_signed.py). A
  message that is next in line is delivered at once. One that arrives ahead of a hole
  is *held* for at most `reorder_s` (long enough for one Plumtree GRAFT round:
  `graft_timeout_s` 0.5 s plus a round trip) or until `max_held` are waiting; then
  the held ones are delivered in order and the first after each hole carries `gap`,
  the number of messages skipped. A skipped message that turns up later is `late`:
  `check` says so and `take_late` lets it through once (the caller delivers it
  flagged, outside the order: topic_pubsub.py); a second copy is `replayed`.
- **The first message of a publisher we never heard** is delivered at once when its
  seq is 1; otherwise it is held like one after a hole (we may have joined mid-stream,
  and an earlier message may be right behind it), then delivered with `gap` 0.
- **Replays are refused**: anything at or below the last delivered seq of the
  publisher's current epoch (`replayed`), anything of an older epoch (`replayed`), a
  seq already held (`replayed`), and anything signed more than `max_age_s` ago or more
  than `future_s` ahead of our clock (`stale`, `future`). A publisher's entry outlives
  its last message by `max_age_s + future_s`, so a message that could still pass the
  age test always meets its publisher's entry; only overflow of `max_publishers`
  evicts earlier (counted, `publishers_evicted`).

`check` says whether a message is fresh (before it is forwarded: a replay is not
passed on); `accept` records a fresh message that Plumtree delivered and returns what
may be handed to the user now, plus a deadline for the hold timer; `expire` is that
timer. Items are opaque to this module.

Bounds: `max_publishers` entries, each with at most `max_held` held items and
`MAX_SKIPPED` remembered skipped seqs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from overlay.core.errors import ConfigError
from overlay.core.ids import PeerId

T = TypeVar("T")
#: Skipped seqs remembered per publisher (to tell `late` from `replayed`).
MAX_SKIPPED = 256


@dataclass(frozen=True, slots=True)
class OrderConfig:
    reorder_s: float = 1.0
    max_held: int = 64
    max_publishers: int = 1024
    max_age_s: float = 600.0
    future_s: float = 600.0

    def __post_init__(self) -> None:
        if min(self.reorder_s, self.max_age_s, self.future_s) <= 0:
            raise ConfigError("topic order: windows must be positive")
        if min(self.max_held, self.max_publishers) < 1:
            raise ConfigError("topic order: bounds must be ≥ 1")


@dataclass(slots=True)
class _Publisher(Generic[T]):
    epoch: int
    next_seq: int | None  # None: base unknown (first message had seq > 1)
    seen_at: float
    held: dict[int, T] = field(default_factory=dict)
    deadline: float | None = None
    skipped: dict[int, None] = field(default_factory=dict)


class PublisherOrder(Generic[T]):
    """The order state of one topic: one entry per publisher, least recent first."""

    __slots__ = ("cfg", "counters", "pubs")

    def __init__(self, cfg: OrderConfig) -> None:
        self.cfg = cfg
        self.pubs: dict[PeerId, _Publisher[T]] = {}
        self.counters: dict[str, int] = {"gaps": 0, "held": 0, "held_overflow": 0,
                                         "publishers_evicted": 0}

    def check(self, publisher: PeerId, epoch: int, seq: int, at: float,
              now: float) -> str | None:
        """None if the message is fresh; else the refusal: stale, future, replayed, late."""
        if now - at > self.cfg.max_age_s:
            return "stale"
        if at - now > self.cfg.future_s:
            return "future"
        p = self.pubs.get(publisher)
        if p is None or epoch > p.epoch:
            return None
        if epoch < p.epoch or seq in p.held:
            return "replayed"
        if p.next_seq is not None and seq < p.next_seq:
            return "late" if seq in p.skipped else "replayed"
        return None

    def take_late(self, publisher: PeerId, seq: int) -> bool:
        """A skipped `seq` arrived: True the first time (deliver it, flagged late);
        afterwards it is no longer skipped, so another copy checks as `replayed`."""
        p = self.pubs.get(publisher)
        if p is None or seq not in p.skipped:
            return False
        del p.skipped[seq]
        return True

    def accept(self, publisher: PeerId, epoch: int, seq: int, item: T,
               now: float) -> tuple[list[tuple[T, int]], float | None]:
        """Record a fresh message; return [(item, gap)] to deliver now, in order, and
        a deadline to arm the hold timer at (None: no timer needed)."""
        out: list[tuple[T, int]] = []
        self._forget_idle(now)
        p = self.pubs.pop(publisher, None)
        if p is not None and epoch > p.epoch:
            self._release_all(p, out)  # what the old epoch still held goes first
            p = None
        if p is None:
            if len(self.pubs) >= self.cfg.max_publishers:
                victim = next(iter(self.pubs))
                self._release_all(self.pubs.pop(victim), out)
                self.counters["publishers_evicted"] += 1
            p = _Publisher(epoch, 1 if seq == 1 else None, now)
        self.pubs[publisher] = p  # most recent last
        p.seen_at = now
        if p.next_seq == seq:
            out.append((item, 0))
            p.next_seq = seq + 1
            self._release_run(p, out)
        else:
            # Held first, then released with the others on overflow: with the base
            # unknown, the newcomer may be the lowest seq (releasing the others first
            # and holding it after them delivered it out of order, with a negative gap).
            p.held[seq] = item
            self.counters["held"] += 1
            if len(p.held) > self.cfg.max_held:
                self.counters["held_overflow"] += 1
                self._release_all(p, out)
            elif p.next_seq is not None and min(p.held) == p.next_seq:
                self._release_run(p, out)
        if p.held and p.deadline is None:
            p.deadline = now + self.cfg.reorder_s
            return out, p.deadline
        if not p.held:
            p.deadline = None
        return out, None

    def expire(self, publisher: PeerId, now: float) -> list[tuple[T, int]]:
        """The hold timer of `publisher`: deliver everything held, holes skipped."""
        out: list[tuple[T, int]] = []
        p = self.pubs.get(publisher)
        if p is None or p.deadline is None or p.deadline > now:
            return out  # stale timer
        self._release_all(p, out)
        return out

    # ------------------------------------------------------------ internals

    def _release_run(self, p: _Publisher[T], out: list[tuple[T, int]]) -> None:
        """Deliver held items that are next in line."""
        assert p.next_seq is not None
        while p.next_seq in p.held:
            out.append((p.held.pop(p.next_seq), 0))
            p.next_seq += 1
        if not p.held:
            p.deadline = None

    def _release_all(self, p: _Publisher[T], out: list[tuple[T, int]]) -> None:
        """Deliver every held item in seq order; the first after a hole carries the gap."""
        for seq in sorted(p.held):
            gap = 0 if p.next_seq is None else seq - p.next_seq
            if gap > 0:
                self.counters["gaps"] += gap
                for s in range(max(seq - gap, seq - MAX_SKIPPED), seq):
                    if len(p.skipped) >= MAX_SKIPPED:
                        del p.skipped[next(iter(p.skipped))]
                    p.skipped[s] = None
            out.append((p.held[seq], gap))
            p.next_seq = seq + 1
        p.held.clear()
        p.deadline = None

    def _forget_idle(self, now: float) -> None:
        """Drop publishers silent for longer than any message of theirs stays fresh."""
        keep = self.cfg.max_age_s + self.cfg.future_s
        while self.pubs:
            peer, p = next(iter(self.pubs.items()))
            if now - p.seen_at <= keep or p.held:
                return
            del self.pubs[peer]

    def entries(self) -> int:
        return len(self.pubs) + sum(len(p.held) + len(p.skipped) for p in self.pubs.values())
