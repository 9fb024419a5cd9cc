"""The daemon pid file: one holder per home, stale files recognised by the lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from overlay.runtime.process.pidfile import (
    PID_FILE,
    AlreadyRunning,
    PidFile,
    process_alive,
    remove_stale,
    running_pid,
)


def test_second_holder_is_refused_with_the_pid(tmp_path: Path) -> None:
    assert running_pid(tmp_path) is None
    with PidFile(tmp_path):
        assert running_pid(tmp_path) == os.getpid()
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}") as e:
            PidFile(tmp_path).__enter__()
        assert "daemon stop" in str(e.value)
        assert not remove_stale(tmp_path)  # held: never removed
    assert not (tmp_path / PID_FILE).exists()
    assert running_pid(tmp_path) is None


def test_file_left_by_a_dead_process_is_stale(tmp_path: Path) -> None:
    # A child takes the lock and dies without cleaning up (as after kill -9).
    code = ("import os, sys; from pathlib import Path; "
            "from overlay.runtime.process.pidfile import PidFile; "
            "PidFile(Path(sys.argv[1])).__enter__(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    assert (tmp_path / PID_FILE).exists()
    assert running_pid(tmp_path) is None
    with PidFile(tmp_path):  # taken over
        assert (tmp_path / PID_FILE).read_text().strip() == str(os.getpid())
    (tmp_path / PID_FILE).write_text("12345\n")
    assert remove_stale(tmp_path) and not (tmp_path / PID_FILE).exists()


def test_process_alive() -> None:
    assert process_alive(os.getpid())
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=60)
    assert not process_alive(p.pid)
