"""`colony daemon --detach`, `daemon status`, `daemon stop`, the pid file (real processes).

A detached daemon answers its API when the command returns; a second start (detached
or in the foreground) refuses while it runs; `daemon stop` leaves and waits for the
exit; after kill -9 the leftover pid file is recognised as stale and a new start takes
it over; `colony leave` stops a detached daemon too.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
from colony_cluster import Node, colony_cmd, wait_for

from overlay.runtime.process.pidfile import PID_FILE, process_alive, running_pid

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _pid_of(out: str) -> int:
    # "daemon running in the background (pid 1234); log: …"
    return int(out.split("(pid ", 1)[1].split(")", 1)[0])


def test_detach_status_stop_and_stale_pid_file(tmp_path: Path) -> None:
    home = tmp_path / "node"
    colony_cmd(home, "init")
    node = Node(home)
    node.init_config()
    pids: list[int] = []
    try:
        r = colony_cmd(home, "daemon", "--detach", timeout=90)
        pid = _pid_of(r.stdout)
        pids.append(pid)
        # Returned only once the API answers: usable at once, no polling needed.
        assert colony_cmd(home, "members", "--json").stdout.count(node_id(home)) == 1
        assert (home / PID_FILE).read_text().strip() == str(pid)
        assert running_pid(home) == pid
        assert "daemon_started" in (home / "daemon.log").read_text()

        for argv in (["daemon", "--detach"], ["daemon"]):
            again = colony_cmd(home, *argv, check=False, timeout=60)
            assert again.returncode == 1, again.stderr
            assert "already running" in again.stderr and f"pid {pid}" in again.stderr

        st = colony_cmd(home, "daemon", "status", check=False)
        assert st.returncode == 0 and f"running (pid {pid})" in st.stdout

        stop = colony_cmd(home, "daemon", "stop", timeout=60)
        assert "stopped" in stop.stdout
        assert running_pid(home) is None and not (home / PID_FILE).exists()
        assert not process_alive(pid)
        assert colony_cmd(home, "daemon", "status", check=False).returncode == 3

        # kill -9 leaves the pid file behind; it is stale, not a reason to refuse.
        pid = _pid_of(colony_cmd(home, "daemon", "--detach", timeout=90).stdout)
        pids.append(pid)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: running_pid(home) is None, 10, "the killed daemon's lock to go")
        assert (home / PID_FILE).exists()
        assert colony_cmd(home, "daemon", "status", check=False).returncode == 3
        pid = _pid_of(colony_cmd(home, "daemon", "--detach", timeout=90).stdout)
        pids.append(pid)
        assert running_pid(home) == pid

        colony_cmd(home, "leave", timeout=60)
        wait_for(lambda: running_pid(home) is None, 30, "the daemon to exit after leave")
        assert not (home / PID_FILE).exists()

        # stop with nothing running, after removing a stale file by hand-made leftovers.
        (home / PID_FILE).write_text("999999\n")
        out = colony_cmd(home, "daemon", "stop").stdout
        assert "stale pid file" in out and not (home / PID_FILE).exists()
    finally:
        for p in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p, signal.SIGKILL)


def node_id(home: Path) -> str:
    return colony_cmd(home, "id").stdout.strip()
