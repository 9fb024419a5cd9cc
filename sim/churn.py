"""Churn: session and downtime lengths from measured distributions, crash vs graceful.

Each node slot alternates between a session (online) and a downtime (offline), each
drawn from a distribution; this on/off model is the one Stutzbach & Rejaie (IMC 2006,
"Understanding Churn in Peer-to-Peer Networks", §5–6) recommend for simulation, with
heavy-tailed session times (a Weibull with shape < 1 fits better than exponential,
for Gnutella, BitTorrent and Kad alike). A session ends with a crash (silent) or a
graceful leave (announced) with probability `graceful_fraction`.

Distributions, parameterised by their *median* so that presets read naturally:

| name        | parameters              | median                     |
|-------------|-------------------------|----------------------------|
| exponential | median_s                | mean · ln 2                |
| weibull     | median_s, shape k       | scale · (ln 2)^(1/k)       |
| pareto      | median_s, shape α (>1)  | x_m · 2^(1/α) (Lomax form) |

Presets (`PRESETS`) are representative fits, not exact numbers from the papers: see
docs/simulation.md, "Churn", for the sources and what each preset is meant to mimic.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from overlay.core.errors import ConfigError

KINDS = ("exponential", "weibull", "pareto")


@dataclass(frozen=True, slots=True)
class Dist:
    kind: str
    median_s: float
    shape: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown distribution {self.kind!r}; known: {', '.join(KINDS)}")
        if not self.median_s > 0:
            raise ConfigError("distribution median_s must be positive")
        if not self.shape > 0 or (self.kind == "pareto" and self.shape <= 1.0):
            raise ConfigError(f"{self.kind} shape must be positive (pareto: > 1)")

    def sample(self, rng: random.Random) -> float:
        m = self.median_s
        if self.kind == "exponential":
            return rng.expovariate(math.log(2.0) / m)
        if self.kind == "weibull":
            scale = m / math.pow(math.log(2.0), 1.0 / self.shape)
            return rng.weibullvariate(scale, self.shape)
        # Lomax (Pareto II, support from 0): x_m·((1-u)^(-1/α) - 1); median x_m(2^(1/α)-1).
        xm = m / (math.pow(2.0, 1.0 / self.shape) - 1.0)
        return xm * (math.pow(1.0 - rng.random(), -1.0 / self.shape) - 1.0)

    def mean_s(self) -> float:
        m = self.median_s
        if self.kind == "exponential":
            return m / math.log(2.0)
        if self.kind == "weibull":
            scale = m / math.pow(math.log(2.0), 1.0 / self.shape)
            return scale * math.gamma(1.0 + 1.0 / self.shape)
        xm = m / (math.pow(2.0, 1.0 / self.shape) - 1.0)
        return xm / (self.shape - 1.0)


#: name -> (session, downtime). See docs/simulation.md for the sources.
PRESETS: dict[str, tuple[Dist, Dist]] = {
    # Kad-like (Stutzbach & Rejaie 2006; Steiner et al. IMC 2007): heavy-tailed
    # Weibull sessions with shape ≈ 0.5, median around an hour; long downtimes.
    "kad": (Dist("weibull", 3600.0, 0.5), Dist("weibull", 3 * 3600.0, 0.5)),
    # IPFS DHT servers (Henningsen et al. 2020; Trautwein et al. SIGCOMM 2022): most
    # sessions short, a long tail of stable servers.
    "ipfs": (Dist("weibull", 1800.0, 0.45), Dist("weibull", 2 * 3600.0, 0.5)),
    # Gnutella-like fast turnover (Stutzbach & Rejaie 2006).
    "gnutella": (Dist("weibull", 900.0, 0.4), Dist("weibull", 3600.0, 0.4)),
    # Memoryless reference for comparisons.
    "exponential": (Dist("exponential", 3600.0), Dist("exponential", 3600.0)),
}


@dataclass(frozen=True, slots=True)
class ChurnConfig:
    session: Dist
    downtime: Dist
    graceful_fraction: float = 0.5
    #: Churn begins here (the first sessions are residual lives from this point).
    start_s: float = 0.0
    #: True: a returning node keeps its identity (IPFS/Kad do); False: a new PeerId.
    same_identity: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.graceful_fraction <= 1.0:
            raise ConfigError("churn graceful_fraction must be in [0, 1]")


def availability(cfg: ChurnConfig) -> float:
    """Long-run fraction of time a node is online: E[S] / (E[S] + E[D])."""
    s, d = cfg.session.mean_s(), cfg.downtime.mean_s()
    return s / (s + d)
