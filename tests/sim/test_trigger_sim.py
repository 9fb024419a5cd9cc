"""The trigger-scale scenario scaled down (sim/scenarios/trigger-small.toml: 150 nodes,
20 triggers, 1,500 user events, heavy Weibull churn, oracle membership).

Exactly once, as the daemon's triggers promise it: every event fires its trigger (at
least once) and launches one capsule, accepted once. Under churn, trigger holders die
mid-stream; custody re-places the trigger and the new holder catches up from its
recent-events log, firing again events the old holder already fired: those duplicate
firings submit the same derived capsule id and custody collapses them. The only events
allowed to go unfired are those of a trigger whose custody lost a majority for good
(two of its three custodians died before they handed over, none returned): custody
epochs never act without that majority (docs/capsules.md). One seed gives
byte-identical output (test_sim_golden pins it); a failing seed replays with `colony
sim run trigger-small --seed N`.
"""

from pathlib import Path

import pytest

from sim import scenario
from sim.simulations import simulation_for
from sim.triggers import TriggerSimulation

SEED = 1


def _run(out: Path, seed: int = SEED) -> tuple[dict[str, bytes], TriggerSimulation]:
    sim = simulation_for(scenario.load(scenario.resolve("trigger-small")).with_(seed=seed))
    assert isinstance(sim, TriggerSimulation)
    sim.run().write(out)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}, sim


def test_trigger_sim_fires_each_event_once_under_churn(tmp_path: Path) -> None:
    # One run: that a seed gives byte-identical output is test_sim_golden's
    # `trigger-small` (the same scenario, 60 nodes and 60 s: churn, triggers, re-placed
    # holders catching up), pinned across processes; a second 150-node run here cost
    # ~7 CPU s for a weaker, same-process comparison.
    one, sim = _run(tmp_path / "one")
    assert {"metrics.json", "timeseries.csv"} <= set(one), sorted(one)
    c = sim.metrics.counters
    assert c["triggers_created"] == 20 and c["trigger_events_published"] == 1500, c
    # At most once: duplicate firings happened and every one collapsed.
    assert c["trigger_duplicate_firings"] > 50, f"seed={SEED}: {c}"
    assert c["capsules_accepted_twice"] == 0, f"seed={SEED}: {c}"
    assert c["capsule_token_not_increasing"] == 0, f"seed={SEED}: {c}"
    assert len({p.derived.id for p in sim.events if p.derived}) == c["trigger_events_fired"]
    # The churn re-placed triggers and the new holders caught up.
    assert c["trigger_replacements"] >= 3 and c["trigger_catchup_firings"] > 0, c
    # At least once: nothing missed but behind custody that lost its majority.
    assert c["trigger_events_fired"] + c["trigger_events_missed"] == 1500
    assert c["trigger_events_missed"] == c["trigger_events_missed_custody_blocked"], c
    assert c["capsules_unfinished"] == (c["capsules_unfinished_custody_blocked"]
                                        + c["capsules_unfinished_fired_late"]), c
    # The published figures (docs/simulation.md, "Triggers at scale"): one trigger of
    # twenty lost its custody majority and with it 81 events.
    assert c["triggers_custody_blocked"] <= 1 and c["trigger_events_missed"] <= 100, c
    d = sim.metrics.summary()["distributions"]
    fired = d["trigger_event_to_fired_s"]
    assert fired["p50"] <= sim.cc.event_spread_s, fired  # live delivery, not catch-up


#: Seeds 2 and 7 left capsules leased too late to finish (see below); 13 is a third
#: draw, in `make test-long` since stop 33 (~7 CPU s).
@pytest.mark.parametrize("seed", [2, 7, pytest.param(13, marks=pytest.mark.long)])
def test_trigger_sim_more_seeds_explain_every_miss(tmp_path: Path, seed: int) -> None:
    """Other seeds: every unfired event has a known cause (sim/triggers.py
    MISS_REASONS: custody that lost its majority, the next holder's node restarted
    after the event reached it, or the event was older than the next holder's log),
    every unfinished capsule is behind such custody or was fired too late to finish (a
    trigger whose custody lost its majority for a while fires its backlog when a
    custodian returns), and nothing is accepted twice. Seeds 4..23 were searched the
    same way once (docs/simulation.md); these three are checked here."""
    _, sim = _run(tmp_path / f"s{seed}", seed)
    c = sim.metrics.counters
    assert c["trigger_events_missed_other"] == 0, f"seed={seed}: {c}"
    assert c["capsule_token_not_increasing"] == 0, f"seed={seed}: {c}"
    assert c["capsules_accepted_twice"] == 0, f"seed={seed}: {c}"
    # Also leased or taken over (a fresh lease period) too late to finish: custody
    # blocked for most of the run, a custodian back near the end (seeds 2 and 7
    # since commit points and read repair changed the timing).
    cc, live = sim.cc, sim.live_peers()
    late = sim.engine.now - (cc.run_max_s + cc.lease_timeout_s + cc.offer_timeout_s
                             + cc.detect_s)  # fmt: skip
    leased_late = sum(1 for cid in sim.submitted if cid not in sim.finished
                      and not sim.custody_blocked(cid, live) and sim.submitted[cid] < late
                      and sim.leased_at.get(cid, 0.0) >= late)  # fmt: skip
    assert c["capsules_unfinished"] == (c["capsules_unfinished_custody_blocked"]
                                        + c["capsules_unfinished_fired_late"]
                                        + leased_late), f"seed={seed}: {c}"
