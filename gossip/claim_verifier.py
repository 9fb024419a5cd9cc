"""Claim checks before state changes: a signature-verification cache and a
per-accuser rate limiter.

`Verifier` remembers envelopes whose signature already verified, keyed by the
signature bytes (an Ed25519 signature commits to key and message, and we also compare
the body and signer), in a bounded LRU dict. One node verifies a given alive or ad
once, however many members forward it. A simulator may share one `Verifier` among
all its cores so each signed object is verified once per process.

`AccuserLimiter` is a token bucket per accuser (bounded map, oldest evicted): a member
that floods suspicions or death notices is cut off after `burst` until tokens refill.
"""

from __future__ import annotations

from overlay.core.crypto import Envelope
from overlay.core.errors import BadSignature
from overlay.core.ids import PeerId


class Verifier:
    __slots__ = ("_ok", "hits", "max_entries", "verified")

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max(1, max_entries)
        self._ok: dict[bytes, tuple[bytes, bytes]] = {}
        self.hits = 0
        self.verified = 0

    def check(self, env: Envelope, kind: str) -> None:
        """Raise BadSignature unless `env` is a valid signed object of `kind`."""
        if env.kind != kind:
            raise BadSignature(f"expected a {kind!r} envelope, got {env.kind!r}")
        hit = self._ok.get(env.signature)
        if hit is not None and hit[0] == env.body and hit[1] == env.signer:
            self.hits += 1
            # LRU: move to the end.
            del self._ok[env.signature]
            self._ok[env.signature] = hit
            return
        env.verify(kind)
        self.verified += 1
        if len(self._ok) >= self.max_entries:
            del self._ok[next(iter(self._ok))]
        self._ok[env.signature] = (env.body, env.signer)

    def __len__(self) -> int:
        return len(self._ok)


class AccuserLimiter:
    __slots__ = ("_buckets", "burst", "max_accusers", "refill_per_s")

    def __init__(self, burst: int, refill_per_s: float, max_accusers: int) -> None:
        self.burst = float(burst)
        self.refill_per_s = refill_per_s
        self.max_accusers = max(1, max_accusers)
        self._buckets: dict[PeerId, tuple[float, float]] = {}  # tokens, last update

    def allow(self, accuser: PeerId, now: float) -> bool:
        tokens, last = self._buckets.pop(accuser, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.refill_per_s)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        if len(self._buckets) >= self.max_accusers:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[accuser] = (tokens, now)
        return ok

    def __len__(self) -> int:
        return len(self._buckets)
