"""Daily quota accounting for cross-colony grants (docs/federation.md, "Quotas").

A grant (overlay/core/grants.py) may cap, per UTC day, the capsules A accepts from B,
the CPU-seconds they may use and the bytes A's nodes serve B. `QuotaLedger` is the
count one node keeps; which node counts what is the runtime's choice
(services/federation.py: capsules and CPU-seconds at the grant's quota holder, bytes at
each serving node) and the bound that follows is stated there and in the docs.

CPU-seconds are *reserved* when a capsule is accepted — ``max(cpu, 1) ×
maxexectime_s``, the most it can use, since the executor kills it at that deadline —
and *settled* to ``max(cpu, 1) × (finished − started)`` once its receipt is known. So
a capsule is refused before it could push the day over the quota, never after, and
settled capsules give back what they did not use.

A day is ``floor(unix seconds / 86400)`` (UTC); a capsule is charged to the day it was
accepted, whatever day it finishes.

Invariants: for every grant and day, the usage counted here never exceeds a quota
through `charge_submit`/`charge_bytes` after a `None` from the matching check (the
check and the charge are one step for bytes); `len(grants) ≤ max_grants`, `len(charges)
≤ max_charges` (oldest forgotten first, counted in `dropped`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from overlay.core.grants import QUOTA_UNITS, Grant, colony_name

DAY_S = 86400.0


def day_of(now: float) -> int:
    return int(now // DAY_S)


def cpu_cost(cpu: float, seconds: float) -> float:
    """CPU-seconds a capsule asking `cpu` cores uses in `seconds` (at least one core)."""
    return max(cpu, 1.0) * max(seconds, 0.0)


@dataclass(slots=True)
class Usage:
    """One grant's usage on one day."""

    day: int
    capsules: int = 0
    cpu_s: float = 0.0
    bytes: int = 0

    def get(self, key: str) -> float:
        return float({"capsules": self.capsules, "cpu_s": self.cpu_s, "bytes": self.bytes}[key])

    def as_json(self) -> dict[str, Any]:
        return {"day": self.day, "capsules": self.capsules, "cpu_s": round(self.cpu_s, 3),
                "bytes": self.bytes}  # fmt: skip


@dataclass(slots=True)
class Charge:
    """A capsule's CPU-second charge: reserved at acceptance, settled at its receipt."""

    grant: str
    day: int
    cpu_s: float
    settled: bool = False


def refusal(grant: Grant, key: str, used: float, asked: float) -> str:
    """The reason a request over quota is refused, with the figures."""
    limit = grant.limit(key) or 0
    unit = QUOTA_UNITS[key]
    more = f"; this request asks {asked:,.0f} more" if key != "capsules" else ""
    return (f"quota exceeded: colony {colony_name(grant.grantee)} used {used:,.0f} of "
            f"{limit:,} {unit} today under grant {grant.serial[:12]}{more}")  # fmt: skip


class QuotaLedger:
    """What one node counted of each grant's quotas today."""

    __slots__ = ("charges", "dropped", "grants", "max_charges", "max_grants")

    def __init__(self, max_grants: int = 4096, max_charges: int = 100_000) -> None:
        self.max_grants = max(1, max_grants)
        self.max_charges = max(1, max_charges)
        self.grants: dict[str, Usage] = {}  # grant serial -> today's usage
        self.charges: dict[str, Charge] = {}  # capsule id -> its CPU-second charge
        self.dropped = 0

    def usage(self, serial: str, now: float) -> Usage:
        """Today's usage of grant `serial` (zero on a new day)."""
        day = day_of(now)
        u = self.grants.get(serial)
        if u is None or u.day != day:
            u = Usage(day)
            if serial not in self.grants and len(self.grants) >= self.max_grants:
                del self.grants[next(iter(self.grants))]
                self.dropped += 1
            self.grants[serial] = u
        return u

    def check_submit(self, grant: Grant, cpu_s: float, now: float) -> str | None:
        """None if one more capsule reserving `cpu_s` CPU-seconds fits today's quotas,
        else the refusal with the figures."""
        u = self.usage(grant.serial, now)
        cap = grant.limit("capsules")
        if cap is not None and u.capsules + 1 > cap:
            return refusal(grant, "capsules", u.capsules, 1)
        cpu = grant.limit("cpu_s")
        if cpu is not None and u.cpu_s + cpu_s > cpu + 1e-9:
            return refusal(grant, "cpu_s", u.cpu_s, cpu_s)
        return None

    def charge_submit(self, grant: Grant, capsule_id: str, cpu_s: float, now: float) -> None:
        """Count an accepted capsule and reserve its CPU-seconds (once per capsule)."""
        if capsule_id in self.charges:
            return
        u = self.usage(grant.serial, now)
        u.capsules += 1
        u.cpu_s += cpu_s
        if len(self.charges) >= self.max_charges:
            del self.charges[next(iter(self.charges))]
            self.dropped += 1
        self.charges[capsule_id] = Charge(grant.serial, u.day, cpu_s)

    def refund(self, capsule_id: str) -> None:
        """Undo the charge of a capsule that custody refused after all."""
        c = self.charges.pop(capsule_id, None)
        u = self.grants.get(c.grant) if c else None
        if c is not None and u is not None and u.day == c.day:
            u.capsules = max(0, u.capsules - 1)
            u.cpu_s = max(0.0, u.cpu_s - c.cpu_s)

    def unsettled(self, serial: str) -> list[str]:
        """Capsules of grant `serial` charged today whose receipt is not known yet."""
        day = self.grants[serial].day if serial in self.grants else None
        return [cid for cid, c in self.charges.items()
                if c.grant == serial and not c.settled and c.day == day]  # fmt: skip

    def settle(self, capsule_id: str, actual_cpu_s: float) -> bool:
        """Replace a capsule's reservation by what it used; False if not charged here."""
        c = self.charges.get(capsule_id)
        if c is None or c.settled:
            return False
        actual = min(actual_cpu_s, c.cpu_s)  # the executor stopped it at the reservation
        u = self.grants.get(c.grant)
        if u is not None and u.day == c.day:
            u.cpu_s = max(0.0, u.cpu_s - c.cpu_s + actual)
        c.cpu_s, c.settled = actual, True
        return True

    def charge_bytes(self, grant: Grant, n: int, now: float) -> str | None:
        """Count `n` bytes served under `grant` if they fit today's quota; else the
        refusal (and nothing is counted)."""
        u = self.usage(grant.serial, now)
        limit = grant.limit("bytes")
        if limit is not None and u.bytes + n > limit:
            return refusal(grant, "bytes", u.bytes, n)
        u.bytes += n
        return None

    # ------------------------------------------------------------ persistence

    def to_json(self) -> dict[str, Any]:
        return {
            "grants": {k: u.as_json() for k, u in self.grants.items()},
            "charges": {k: [c.grant, c.day, c.cpu_s, c.settled] for k, c in self.charges.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> QuotaLedger:
        """A ledger from `to_json` output; damaged entries are skipped."""
        led = cls()
        if not isinstance(data, dict):
            return led
        for k, u in dict(data.get("grants", {})).items():
            try:
                led.grants[str(k)] = Usage(int(u["day"]), int(u["capsules"]),
                                           float(u["cpu_s"]), int(u["bytes"]))  # fmt: skip
            except (KeyError, TypeError, ValueError):
                led.dropped += 1
        for k, c in dict(data.get("charges", {})).items():
            try:
                led.charges[str(k)] = Charge(str(c[0]), int(c[1]), float(c[2]), bool(c[3]))
            except (IndexError, TypeError, ValueError):
                led.dropped += 1
        return led


__all__ = ["DAY_S", "Charge", "QuotaLedger", "Usage", "cpu_cost", "day_of", "refusal"]
