"""The simulation class for a scenario: gossip/DHT/exchange, or capsules on top.

Kept apart from `sim.runner` (the base class) and `sim.capsules` (its capsule
subclass) so neither imports the other's dependents: no import cycle inside `sim`.
"""

from __future__ import annotations

from sim.capsules import CapsuleSimulation
from sim.metrics import Metrics
from sim.runner import Simulation
from sim.scenario import Scenario
from sim.triggers import TriggerSimulation, has_triggers


def simulation_for(sc: Scenario, *, progress: bool = False) -> Simulation:
    """A `CapsuleSimulation` when the scenario runs the "capsule" protocol (a
    `TriggerSimulation` when it also has trigger workloads), else the base `Simulation`."""
    if "capsule" in sc.protocols:
        if has_triggers(sc):
            return TriggerSimulation(sc, progress=progress)
        return CapsuleSimulation(sc, progress=progress)
    return Simulation(sc, progress=progress)


def run(sc: Scenario, *, progress: bool = False) -> Metrics:
    """Run one scenario to the end and return its metrics."""
    return simulation_for(sc, progress=progress).run()
