"""Protocol timing and limits, with the `lan`, `wan` and `edge` profiles.

The numbers start from hashicorp/memberlist's published defaults
(`DefaultLANConfig`, `DefaultWANConfig`, `DefaultLocalConfig` in config.go):

| knob                 | lan    | wan    | edge (lossy, slow, NAT'd links) |
|----------------------|--------|--------|---------------------------------|
| probe interval       | 1 s    | 5 s    | 3 s                             |
| probe timeout        | 0.5 s  | 3 s    | 1.5 s                           |
| gossip interval × n  | 0.2 s×3| 0.5 s×4| 0.5 s×3                         |
| push-pull interval   | 30 s   | 60 s   | 60 s                            |
| suspicion mult       | 4      | 6      | 6                               |
| suspicion max mult   | 6      | 6      | 6                               |
| retransmit mult      | 4      | 4      | 5                               |
| awareness max        | 8      | 8      | 8                               |

`lifeguard=False` turns off the three Lifeguard mechanisms at once (local health
multiplier, dynamic suspicion timeouts, buddy system) and the nacks that feed the
first; the result is plain SWIM with memberlist's pre-Lifeguard fixed suspicion
timeout. It exists to measure Lifeguard against SWIM with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from overlay.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class SwimConfig:
    # --- failure detection (SWIM §4, memberlist state.go)
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    awareness_max_multiplier: int = 8
    lifeguard: bool = True
    # --- dissemination
    gossip_interval_s: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead_s: float = 30.0
    retransmit_mult: int = 4
    push_pull_interval_s: float = 30.0
    #: Piggyback budget on ping/ack/ping-req (memberlist's UDP buffer size).
    piggyback_bytes: int = 1400
    #: Budget of one gossip message; large enough for one maximal user event.
    gossip_bytes: int = 72 * 1024
    #: Share of every budget reserved first for user events (never starved).
    user_share: float = 0.4
    #: Members per push-pull message; larger states are sent as several pages.
    push_pull_page: int = 1000
    # --- lifetime
    tombstone_s: float = 600.0
    leave_propagate_s: float = 1.0
    # --- limits (every map and queue is bounded; overflow is a counted drop)
    max_members: int = 100_000
    max_broadcasts: int = 4096
    max_user_events_queued: int = 256
    max_relays: int = 256
    max_seeds: int = 16
    max_accusers: int = 4096
    max_event_senders: int = 4096
    max_holdback_per_sender: int = 64
    holdback_s: float = 10.0
    max_coords: int = 100_000
    verify_cache_size: int = 1024
    max_addrs: int = 8
    # --- trust
    #: Token bucket per accuser: burst, and tokens refilled per probe interval.
    accuse_burst: int = 10
    accuse_refill_per_probe: float = 2.0
    #: Colony mode: peers whose refusal reason is remembered, so that a peer retrying
    #: every second is reported once per `refuse_report_interval_s`, not every time.
    max_refused: int = 1024
    refuse_report_interval_s: float = 60.0
    # --- resource ads
    #: A full ad whose envelope is at most this large also rides on gossip.
    ad_gossip_max_bytes: int = 1024
    #: Deltas kept after a full ad before the owner publishes a fresh full ad.
    max_ad_deltas: int = 8

    def __post_init__(self) -> None:
        positive = (
            "probe_interval_s",
            "probe_timeout_s",
            "gossip_interval_s",
            "push_pull_interval_s",
            "piggyback_bytes",
            "gossip_bytes",
            "push_pull_page",
            "max_members",
            "max_broadcasts",
            "retransmit_mult",
            "suspicion_mult",
            "suspicion_max_timeout_mult",
            "awareness_max_multiplier",
            "accuse_burst",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"gossip config: {name} must be positive")
        if self.probe_timeout_s >= self.probe_interval_s:
            raise ConfigError("gossip config: probe_timeout_s must be below probe_interval_s")
        if not 0.0 < self.user_share < 1.0:
            raise ConfigError("gossip config: user_share must be in (0, 1)")
        if self.indirect_checks < 0 or self.gossip_nodes < 0:
            raise ConfigError("gossip config: counts must be non-negative")

    def with_(self, **changes: Any) -> SwimConfig:
        return replace(self, **changes)


LAN = SwimConfig()
WAN = SwimConfig(
    probe_interval_s=5.0,
    probe_timeout_s=3.0,
    suspicion_mult=6,
    gossip_interval_s=0.5,
    gossip_nodes=4,
    gossip_to_the_dead_s=60.0,
    push_pull_interval_s=60.0,
    tombstone_s=3600.0,
    leave_propagate_s=2.0,
)
EDGE = SwimConfig(
    probe_interval_s=3.0,
    probe_timeout_s=1.5,
    suspicion_mult=6,
    gossip_interval_s=0.5,
    gossip_nodes=3,
    gossip_to_the_dead_s=60.0,
    retransmit_mult=5,
    push_pull_interval_s=60.0,
    piggyback_bytes=1200,
    tombstone_s=3600.0,
    leave_propagate_s=2.0,
)
PROFILES: dict[str, SwimConfig] = {"lan": LAN, "wan": WAN, "edge": EDGE}


def profile(name: str, **overrides: Any) -> SwimConfig:
    """The named profile, with optional field overrides."""
    try:
        base = PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown gossip profile {name!r}; known: {sorted(PROFILES)}") from None
    return base.with_(**overrides) if overrides else base
