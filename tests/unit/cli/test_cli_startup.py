"""`colony` start-up stays light: building the parser imports no heavy module.

Behavioural guards, not timings (bench/cli.py measures): each command module imports
the store, the SDK (anyio, trio, the API server) or structlog inside its handler, so
`colony --version` and `colony --help` load none of them, while `colony completion`
still sees the whole parser.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from overlay.cli import cmd_cert, cmd_grant, cmd_node
from overlay.core.certs import ALL_ROLES
from overlay.core.grants import GRANT_ROLES
from overlay.runtime.process import config

HEAVY = ("trio", "anyio", "structlog", "lmdb", "overlay.client.sync", "overlay.client.aio",
         "overlay.runtime.api.server", "store.blockstore", "shtab", "cryptography")
ROOT = Path(__file__).resolve().parents[3]


def loaded_after(argv: list[str], home: Path) -> set[str]:
    """Run `colony *argv` in a fresh interpreter; the modules it imported, by name."""
    probe = (
        "import json, sys\n"
        "from overlay.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLONY_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, timeout=60, check=True)
    return set(json.loads(out.stderr.rsplit("MODULES ", 1)[1]))


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["add", "--help"]])
def test_parsing_imports_no_heavy_module(argv: list[str], tmp_path: Path) -> None:
    loaded = loaded_after(argv, tmp_path)
    assert "overlay.cli.cmd_store" in loaded  # the whole parser was built
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_id_runs_without_the_sdk_or_structlog(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "overlay.cli.main", "--home", str(tmp_path / "n"),
                    "init"], env=env, capture_output=True, timeout=60, check=True)
    loaded = loaded_after(["--home", str(tmp_path / "n"), "id"], tmp_path)
    assert "overlay.runtime.process.identity" in loaded  # the handler did run
    assert sorted(m for m in ("trio", "anyio", "structlog", "overlay.client.sync")
                  if m in loaded) == []


def test_importing_sdk_types_does_not_pull_anyio(tmp_path: Path) -> None:
    probe = ("import sys, overlay.client.types, overlay.client.errors\n"
             "print(sorted(m for m in ('anyio', 'trio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_sdk_names_still_resolve_from_the_package() -> None:
    import overlay.client as sdk

    for name in sdk.__all__:
        assert getattr(sdk, name) is not None, name
    with pytest.raises(AttributeError):
        _ = sdk.NoSuchName


def test_spelled_out_choices_match_their_source() -> None:
    assert cmd_cert.ROLES == ALL_ROLES
    assert tuple(sorted(GRANT_ROLES)) == cmd_grant.ROLES
    assert tuple(sorted(config.NODE_PROFILES)) == cmd_node.PROFILES
