"""`colony doctor` without a daemon, no root needed: what it can check
locally is checked, the rest is marked '?', a missing node is said plainly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from colony_cluster import colony_cmd

pytestmark = pytest.mark.slow


def test_doctor_on_a_stopped_edge_node(tmp_path: Path) -> None:
    home = tmp_path / "n"
    colony_cmd(home, "init", "--profile", "edge")
    os.chmod(home / "identity.key", 0o644)  # a mistake the doctor must catch
    report = json.loads(colony_cmd(home, "doctor", "--json", "--no-stun").stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["daemon"] is False and not checks["daemon"]["ok"]
    assert not checks["identity"]["ok"] and "chmod 600" in checks["identity"]["advice"]
    assert checks["profile"]["ok"] and "node profile edge" in checks["profile"]["detail"]
    assert checks["api_loopback"]["ok"] and checks["disk"]["checked"]
    assert not checks["bootstrap"]["ok"]  # a fresh node knows nobody
    for name in ("reachability", "connections", "clock", "lmdb_map"):
        assert checks[name]["checked"] is False, checks[name]
    human = colony_cmd(home, "doctor", "--no-stun").stdout
    assert "✗ identity" in human and "→ chmod 600" in human and "? clock" in human, human


def test_doctor_says_when_there_is_no_node(tmp_path: Path) -> None:
    report = json.loads(colony_cmd(tmp_path / "none", "doctor", "--json").stdout)
    assert [c["name"] for c in report["checks"]] == ["node", "disk"]
    assert "colony init" in report["checks"][0]["advice"]
