"""A token bucket for `[network] max_send_rate` (bytes per second per peer).

Pure: `take(n, now)` returns how long the caller must wait before sending `n`
bytes, and books them. The transport awaits that delay before each write to a
peer, so a provider limited to 20 MB/s sends at 20 MB/s on average with bursts
of at most `burst_bytes` (as a WAN uplink would). Frames are never split.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_level", "_stamp", "burst_bytes", "rate")

    def __init__(self, rate_bytes_per_s: float, burst_bytes: float | None = None) -> None:
        if rate_bytes_per_s <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate_bytes_per_s)
        # Default burst: 50 ms worth of tokens, at least 64 KiB.
        self.burst_bytes = float(burst_bytes or max(64 * 1024, self.rate * 0.05))
        self._level = self.burst_bytes
        self._stamp: float | None = None

    def take(self, n: int, now: float) -> float:
        """Book `n` bytes at time `now`; return the seconds to wait first (≥ 0)."""
        if self._stamp is not None:
            self._level = min(self.burst_bytes, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        self._level -= n
        if self._level >= 0:
            return 0.0
        return -self._level / self.rate
