"""Lifeguard dynamic suspicion timeouts (Lifeguard §IV-B; memberlist suspicion.go).

A suspicion starts at `max_s` and shrinks towards `min_s` as independent members
confirm it, logarithmically in the number of confirmations `n` out of `k` expected:

    timeout(n) = max(min_s, max_s - (max_s - min_s) · log(n + 1) / log(k + 1))

`min_s = suspicion_mult · max(1, log10(N)) · probe_interval` grows with the group
size N, and `max_s = suspicion_max_timeout_mult · min_s`. With k = 0 (nobody else can
confirm, or Lifeguard off) the timeout is `min_s`: SWIM's fixed suspicion timeout.

Invariants: each accuser is counted once; confirmations beyond k are ignored; the
deadline only ever moves earlier (never later than the start plus `max_s`).
"""

from __future__ import annotations

import math

from overlay.core.ids import PeerId


def suspicion_timeout_s(suspicion_mult: int, n_members: int, probe_interval_s: float) -> float:
    """SWIM's base suspicion timeout: mult × max(1, log10(N)) × probe interval."""
    node_scale = max(1.0, math.log10(max(1.0, float(n_members))))
    return suspicion_mult * node_scale * probe_interval_s


def remaining_suspicion_time_s(
    n: int, k: int, elapsed_s: float, min_s: float, max_s: float
) -> float:
    """Time left before a suspicion with `n` of `k` confirmations expires.

    Mirrors memberlist's `remainingSuspicionTime` (millisecond flooring included);
    the result may be negative when the shrunken timeout has already passed.
    """
    if k <= 0:
        timeout = min_s
    else:
        frac = math.log(n + 1.0) / math.log(k + 1.0)
        raw = max_s - frac * (max_s - min_s)
        timeout = max(min_s, math.floor(1000.0 * raw) / 1000.0)
    return timeout - elapsed_s


class Suspicion:
    """One open suspicion: its start, its accusers and its current deadline."""

    __slots__ = ("accusers", "k", "max_s", "min_s", "start")

    def __init__(self, accuser: PeerId, k: int, min_s: float, max_s: float, start: float) -> None:
        if k < 0 or min_s <= 0 or max_s < min_s:
            raise ValueError("suspicion needs k >= 0 and 0 < min_s <= max_s")
        self.k = k
        self.min_s = min_s
        self.max_s = max_s
        self.start = start
        #: Distinct accusers; the first one does not count as a confirmation.
        self.accusers: dict[PeerId, None] = {accuser: None}

    @property
    def confirmations(self) -> int:
        return len(self.accusers) - 1

    def deadline(self) -> float:
        n = min(self.confirmations, self.k)
        return self.start + remaining_suspicion_time_s(n, self.k, 0.0, self.min_s, self.max_s)

    def confirm(self, accuser: PeerId) -> bool:
        """Count an independent confirmation; True when it moved the deadline."""
        if self.confirmations >= self.k or accuser in self.accusers:
            return False
        self.accusers[accuser] = None
        return True
