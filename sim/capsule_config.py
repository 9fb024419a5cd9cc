"""`[capsule]` scenario table: how the capsule simulation (sim/capsules.py) is set up.

Kept apart from sim/capsules.py so that parsing a scenario imports no protocol code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CapsuleSimConfig:
    #: Custodians per capsule (DESIGN §7).
    k_c: int = 3
    #: Executor slots per node (each capsule takes one).
    slots: int = 4
    #: Simulated run time of one attempt: uniform in [run_min_s, run_max_s].
    run_min_s: float = 10.0
    run_max_s: float = 50.0
    #: Share of attempts that exit non-zero (a failed capsule, not a retry).
    fail_fraction: float = 0.0
    maxretries: int = 5
    #: Oracle membership: a crash or a join becomes visible to the others this long
    #: after it happened (what SWIM's detection would take; see docs/simulation.md).
    detect_s: float = 5.0
    #: On a membership change, the nodes XOR-closest to the changed one re-evaluate
    #: their custody (the only ones whose custodian sets can contain it).
    notify_nearest: int = 12
    #: Placement samples this many candidate executors (CustodyConfig.max_candidates).
    max_candidates: int = 16
    #: Custodians persist records and a returning node restores them (durable custody).
    durable: bool = True
    lease_timeout_s: float = 6.0
    heartbeat_s: float = 2.0
    offer_timeout_s: float = 3.0
    #: Latency percentiles are also recorded per capsule in capsules.csv when true.
    per_capsule_rows: bool = False
    #: Trigger simulations (sim/triggers.py): a user event reaches every live node
    #: uniform in [event_spread_s / 10, event_spread_s] after it was published ...
    event_spread_s: float = 2.0
    #: ... and a node keeps the last `event_log` it received for a new lease holder's
    #: catch-up (the daemon's `[node] event_log` holds every event kind: an upper bound).
    event_log: int = 1000

    def __post_init__(self) -> None:
        if self.k_c < 1:
            raise ValueError("k_c must be ≥ 1")
        if self.slots < 1:
            raise ValueError("slots must be ≥ 1")
        if not 0 < self.run_min_s <= self.run_max_s:
            raise ValueError("run_min_s must be positive and ≤ run_max_s")
        if not 0.0 <= self.fail_fraction <= 1.0:
            raise ValueError("fail_fraction must be in [0, 1]")
        if self.maxretries < 0 or self.detect_s < 0:
            raise ValueError("maxretries and detect_s must be ≥ 0")
        if self.notify_nearest < self.k_c or self.max_candidates < 1:
            raise ValueError("notify_nearest must be ≥ k_c and max_candidates ≥ 1")
        if not 0 < self.heartbeat_s * 2 <= self.lease_timeout_s or self.offer_timeout_s <= 0:
            raise ValueError("lease_timeout_s must allow two heartbeats; offer_timeout_s > 0")
        if self.event_spread_s <= 0 or self.event_log < 1:
            raise ValueError("event_spread_s must be positive and event_log ≥ 1")
