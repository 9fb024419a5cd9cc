"""services/cells.py pieces that need no network: `[cell]` validation and the
rendezvous key."""

from __future__ import annotations

import copy

import pytest

from gossip.cell_directory import TTL_INTERVALS, rendezvous_key
from overlay.core.errors import ConfigError
from overlay.runtime.process.config import DEFAULTS
from overlay.runtime.services.cells import cell_config


def test_cell_config_from_the_defaults() -> None:
    conf = copy.deepcopy(DEFAULTS["cell"])
    cfg = cell_config(conf)
    assert cfg.cap == 5000 and cfg.hold_s == 60.0 and cfg.check_interval_s == 10.0
    assert cfg.digest_ttl_s == TTL_INTERVALS * 30.0


@pytest.mark.parametrize(("key", "value", "match"), [
    ("cap", 1, "cap must be"),
    ("merge_below", 1.5, "merge_below"),
    ("hold_s", 0.0, "positive"),
    ("digest_interval_s", -1.0, "digest_interval_s"),
    ("site", "eu/west", "site"),
])
def test_bad_cell_config_names_the_section(key: str, value: object, match: str) -> None:
    conf = {**DEFAULTS["cell"], key: value}
    with pytest.raises(ConfigError, match=rf"\[cell\].*{match}"):
        cell_config(conf)


def test_rendezvous_key_is_a_multihash_per_colony_and_site() -> None:
    k = rendezvous_key("open", "")
    assert k[:2] == b"\x12\x20" and len(k) == 34
    assert len({k, rendezvous_key("open", "eu"), rendezvous_key("12D3KooWx", "")}) == 3
