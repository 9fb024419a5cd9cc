"""Lifeguard local health multiplier (Lifeguard §IV-A; memberlist awareness.go).

A node that cannot keep up (CPU starved, overloaded, slow network interface) sees its
probes fail and wrongly suspects healthy peers. Lifeguard makes it notice: missed nacks
from indirect helpers, failed probes and having to refute suspicions about itself each
raise a score, successful probes lower it, and the node stretches its own probe
interval and probe timeout by `score + 1`.

Invariant: 0 ≤ score < max_multiplier. Disabled (plain SWIM), the multiplier is 1.
"""

from __future__ import annotations


class Awareness:
    __slots__ = ("enabled", "max_multiplier", "score")

    def __init__(self, max_multiplier: int, *, enabled: bool = True) -> None:
        if max_multiplier < 1:
            raise ValueError("awareness max multiplier must be at least 1")
        self.max_multiplier = max_multiplier
        self.enabled = enabled
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        if not self.enabled:
            return
        self.score = min(self.max_multiplier - 1, max(0, self.score + delta))

    @property
    def multiplier(self) -> int:
        return self.score + 1

    def scale(self, timeout_s: float) -> float:
        return timeout_s * (self.score + 1)
