"""The CLI finds a daemon whose API address came from a flag, not the config file.

`colony daemon --api HOST:PORT` used to tell only the daemon: every other command read
`[api] listen` from the config and reported "no daemon". The daemon now writes the
address it bound to `<home>/api.addr` and removes it when it exits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from colony_cluster import Node, colony_cmd

from overlay.runtime.api.server import ADDR_FILE
from overlay.runtime.net.ports import free_port

pytestmark = [pytest.mark.timeout(120)]


def test_cli_reaches_a_daemon_started_with_api_flag(tmp_path: Path) -> None:
    home = tmp_path / "node"
    colony_cmd(home, "init")
    Node(home).init_config()
    port = free_port()
    colony_cmd(home, "daemon", "--detach", "--api", f"127.0.0.1:{port}", timeout=90)
    try:
        assert (home / ADDR_FILE).read_text().strip() == f"127.0.0.1:{port}"
        me = colony_cmd(home, "id").stdout.split()[0]  # local: read from the key file
        assert me in colony_cmd(home, "members", "--json").stdout  # asks the daemon
    finally:
        colony_cmd(home, "daemon", "stop", timeout=60, check=False)
    assert not (home / ADDR_FILE).exists()
