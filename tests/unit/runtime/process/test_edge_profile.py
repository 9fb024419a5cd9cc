"""`[node] profile` presets: edge lowers rates and bounds, keys still win."""

from __future__ import annotations

from pathlib import Path

import pytest

from overlay.core.errors import ConfigError
from overlay.runtime.process import config as cfg


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    (tmp_path / cfg.CONFIG_FILE).write_text(text)
    return cfg.load(tmp_path, env=env or {})


def test_edge_preset_values(tmp_path: Path) -> None:
    c = _load(tmp_path, '[node]\nprofile = "edge"\n')
    assert c["gossip"]["profile"] == "edge"
    assert c["dht"]["alpha"] == 2
    assert c["store"]["initial_map_size_mib"] == 64
    assert c["node"]["event_log"] == 200 and c["node"]["max_known_peers"] == 64


def test_explicit_keys_override_the_preset(tmp_path: Path) -> None:
    c = _load(tmp_path, '[node]\nprofile = "edge"\n[dht]\nalpha = 4\n')
    assert c["dht"]["alpha"] == 4 and c["gossip"]["profile"] == "edge"


def test_environment_selects_the_profile(tmp_path: Path) -> None:
    c = _load(tmp_path, "", env={"COLONY_NODE_PROFILE": "wan"})
    assert c["gossip"]["profile"] == "wan" and c["dht"]["alpha"] == 3


def test_unknown_profile_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profile must be one of lan, wan, edge"):
        _load(tmp_path, '[node]\nprofile = "tiny"\n')


@pytest.mark.parametrize("profile", sorted(cfg.NODE_PROFILES))
def test_generated_template_loads_to_its_preset(tmp_path: Path, profile: str) -> None:
    c = _load(tmp_path, cfg.template_for(profile))
    assert c["node"]["profile"] == profile
    expected = cfg.NODE_PROFILES[profile]
    for section, keys in expected.items():
        for key, value in keys.items():
            assert c[section][key] == value, (section, key)


def test_editing_the_profile_line_of_a_lan_template_takes_effect(tmp_path: Path) -> None:
    text = cfg.template_for("lan").replace('profile = "lan"', 'profile = "edge"', 1)
    assert _load(tmp_path, text)["gossip"]["profile"] == "edge"


def test_docs_example_config_for_a_small_device_loads(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[4] / "docs" / "edge.example.toml"
    c = _load(tmp_path, example.read_text())
    assert c["node"]["profile"] == "edge" and c["gossip"]["profile"] == "edge"
    assert c["dht"]["alpha"] == 2 and len(c["edge"]["stun"]) == 2
