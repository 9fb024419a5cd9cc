"""`[capsule]` scenario table and the capsule workload: validated with the line."""

import pytest

from sim import scenario
from sim.scenario import ScenarioError

BASE = """[scenario]
duration_s = 60

[nodes]
count = 10
protocols = ["capsule"]
"""


def test_capsule_table_and_workload_parse() -> None:
    sc = scenario.parse(BASE + """
[capsule]
slots = 2
run_min_s = 1
run_max_s = 2

[[workload]]
kind = "capsule"
rate_per_s = 3
limit = 50
""")
    assert sc.protocols == ("capsule",)
    assert sc.capsule.slots == 2 and sc.capsule.run_max_s == 2.0
    assert sc.workloads[0].kind == "capsule" and sc.workloads[0].limit == 50


@pytest.mark.parametrize(("extra", "message"), [
    ("\n[capsule]\nslotz = 2\n", ":9: [capsule] slotz: unknown key"),
    ("\n[capsule]\nrun_min_s = 5\nrun_max_s = 1\n", "run_min_s must be positive"),
    ("\n[capsule]\nfail_fraction = 2.0\n", "fail_fraction must be in [0, 1]"),
    ("\n[[workload]]\nkind = \"capsule\"\n", "needs rate_per_s > 0"),
])  # fmt: skip
def test_bad_capsule_settings_name_the_problem(extra: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        scenario.parse(BASE + extra, "x.toml")


def test_capsule_protocol_runs_alone() -> None:
    text = BASE.replace('["capsule"]', '["capsule", "gossip"]')
    with pytest.raises(ScenarioError, match="capsule runs alone"):
        scenario.parse(text, "x.toml")


def test_workload_capsule_needs_the_capsule_protocol() -> None:
    text = BASE.replace('["capsule"]', '["gossip"]') + (
        '\n[[workload]]\nkind = "capsule"\nrate_per_s = 1\n'
    )
    with pytest.raises(ScenarioError, match="needs protocol 'capsule'"):
        scenario.parse(text, "x.toml")
