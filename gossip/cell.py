"""What the parts of one SWIM cell share: this node, the member table, the colony
gate, the configuration, the one rng and the stats counters.

`Transitions`, `Prober` and `AntiEntropy` each take a `Cell` plus the few
collaborators only they use (the broadcast queue, awareness, the verifier,
dissemination), so the six shared ones are named once, in gossip/swim.py.

Invariant: one `Cell` per `Swim`, and its `rng` is the core's only source of
randomness, drawn in call order, so a seeded core replays exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gossip.colony_gate import ColonyGate
from gossip.local_node import LocalNode
from gossip.member_table import MemberTable
from gossip.profiles import SwimConfig


@dataclass(frozen=True, slots=True)
class Cell:
    local: LocalNode
    table: MemberTable
    gate: ColonyGate
    config: SwimConfig
    rng: random.Random
    stats: dict[str, int]
