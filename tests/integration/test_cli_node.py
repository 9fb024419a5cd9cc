"""`colony init` / `colony id` as a user runs them: a real subprocess."""

import os
import subprocess
import sys
from pathlib import Path


def colony(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLONY_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "overlay.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_init_then_id(tmp_path: Path) -> None:
    home = tmp_path / "node"
    r = colony(home, "init")
    assert r.returncode == 0, r.stderr
    assert (home / "identity.key").stat().st_mode & 0o777 == 0o600
    assert "[network]" in (home / "config.toml").read_text()
    r2 = colony(home, "id")
    assert r2.returncode == 0 and r2.stdout.strip().startswith("12D3KooW")
    assert r2.stdout.strip() in r.stdout


def test_init_refuses_to_overwrite_and_id_needs_init(tmp_path: Path) -> None:
    assert colony(tmp_path / "a", "init").returncode == 0
    r = colony(tmp_path / "a", "init")
    assert r.returncode == 1 and "not overwriting" in r.stderr
    r = colony(tmp_path / "b", "id")
    assert r.returncode == 1 and "colony init" in r.stderr


def test_world_readable_key_is_refused_with_clear_message(tmp_path: Path) -> None:
    colony(tmp_path, "init")
    os.chmod(tmp_path / "identity.key", 0o644)
    r = colony(tmp_path, "id")
    assert r.returncode == 1 and "chmod 600" in r.stderr
