"""Scenario files: bundled ones parse; every invalid field is reported with its line."""

from pathlib import Path

import pytest

from overlay.core.errors import ConfigError
from sim import scenario
from sim.scenario import ScenarioError, locate, parse

GOOD = """\
[scenario]
name = "t"
duration_s = 60

[nodes]
count = 10
protocols = ["gossip", "dht"]

[gossip]
profile = "wan"
probe_interval_s = 2.0

[dht]
k = 16

[network]
regions = ["europe", "asia"]
loss = 0.01

[[network.partition]]
start_s = 10
end_s = 20
groups = [["europe"]]

[churn]
preset = "kad"

[[workload]]
kind = "lookup"
rate_per_s = 1

[[workload]]
kind = "kill"
at_s = 30
count = 2
"""


def test_good_scenario_parses() -> None:
    sc = parse(GOOD, "good.toml")
    assert sc.nodes == 10 and sc.protocols == ("gossip", "dht")
    assert sc.gossip_overrides == {"probe_interval_s": 2.0}
    assert sc.dht_overrides == {"k": 16}
    assert [r.name for r in sc.network.regions] == ["europe", "asia"]
    assert sc.partitions[0].groups == (("europe",),)
    assert sc.churn is not None and sc.churn.session.kind == "weibull"
    assert [w.kind for w in sc.workloads] == ["lookup", "kill"]


def test_every_bundled_scenario_is_valid() -> None:
    paths = scenario.bundled()
    assert len(paths) >= 4
    for p in paths:
        assert scenario.load(p).nodes > 0
    assert scenario.resolve("smoke") == scenario.bundled_dir() / "smoke.toml"


def _err(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse(text, "bad.toml")
    assert isinstance(info.value, ConfigError)
    return str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ('duration_s = 60', 'duration_s = "60"', "bad.toml:3: [scenario] duration_s: must be a "
         "number, got a string '60'"),
        ("count = 10", "count = 0", "bad.toml:6: [nodes] count: must be between 1 and 10^7"),
        ('protocols = ["gossip", "dht"]', 'protocols = ["gossip", "chord"]',
         "bad.toml:7: [nodes] protocols"),
        ("probe_interval_s = 2.0", "probe_interval_s = 0.5",
         "bad.toml:11: [gossip] probe_interval_s: gossip config: probe_timeout_s must be "
         "below"),
        ("k = 16", "kk = 16", "bad.toml:14: [dht] kk: unknown key"),
        ("loss = 0.01", "loss = 1.5", "bad.toml:18: [network] loss: must be in [0, 1], got 1.5"),
        ("end_s = 20", "end_s = 5", "bad.toml:22: [network.partition[0]] end_s: must be after"),
        ('preset = "kad"', 'preset = "kazaa"', "bad.toml:26: [churn] preset: must be one of"),
        ("count = 2", "count = -1", "bad.toml:35: [workload[1]] count: must be ≥ 1"),
        ("at_s = 30", "at_s = 30\nsurprise = 1", "bad.toml:35: [workload[1]] surprise: unknown "
         "key"),
    ],
)
def test_bad_field_names_line_table_and_key(old: str, new: str, expect: str) -> None:
    assert old in GOOD
    assert expect in _err(GOOD.replace(old, new, 1))


def test_structural_errors() -> None:
    assert "bad.toml: not valid TOML" in _err("[scenario\n")
    assert "missing required key 'duration_s'" in _err("[scenario]\n[nodes]\ncount = 1\n")
    msg = _err(GOOD.replace('protocols = ["gossip", "dht"]', 'protocols = ["gossip"]')
               .replace("[dht]\nk = 16\n", ""))
    assert "bad.toml:27: [workload[0]] kind: workload 'lookup' needs protocol 'dht'" in msg
    assert "(top level) extra: unknown table" in _err(GOOD + "[extra]\nx = 1\n")
    assert "give exactly one of groups" in _err(GOOD.replace('groups = [["europe"]]',
                                                             "fraction = 0.5\n" +
                                                             'groups = [["europe"]]'))


def test_locate_follows_tables_and_array_indices() -> None:
    assert locate(GOOD, ("workload", 1), "count") == 35
    assert locate(GOOD, ("workload", 0), "count") == 28  # missing: the header line
    assert locate(GOOD, ("network", "partition", 0), "groups") == 23
    assert locate(GOOD, (), None) == 1


def test_missing_file_and_unknown_bundled_name(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        scenario.load(tmp_path / "nope.toml")
    with pytest.raises(ScenarioError, match=r"bundled scenarios: .*smoke"):
        scenario.resolve("no-such-scenario")
