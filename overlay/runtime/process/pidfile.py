"""`<home>/daemon.pid`: one daemon per home, found and stopped by its pid file.

The running daemon holds an exclusive `flock` on the file for its whole life. The lock,
not the pid written in it, is the truth: the kernel drops it the moment the process
dies (even by SIGKILL, even while a zombie awaits reaping), so a leftover file from a
crashed daemon is recognised as stale and taken over, and a recycled pid can never
make a dead daemon look alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from overlay.core.errors import ColonyError

PID_FILE = "daemon.pid"


class AlreadyRunning(ColonyError):
    def __init__(self, home: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"a daemon is already running on {home} ({who}); stop it with "
            f"`colony --home {home} daemon stop` or use another --home"
        )
        self.pid = pid


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(home: Path) -> int | None:
    """The pid of the daemon holding `home`'s lock, or None when none runs."""
    path = home / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(path) or -1  # locked: alive (pid unreadable mid-write)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it: a stale file from a daemon that died
    finally:
        os.close(fd)


class PidFile:
    """Held by the running daemon: `with PidFile(home): run()`."""

    def __init__(self, home: Path) -> None:
        self.path = home / PID_FILE
        self.home = home
        self._fd: int | None = None

    def __enter__(self) -> PidFile:
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AlreadyRunning(self.home, _read_pid(self.path)) from None
            # A daemon exiting right now unlinks the file it locked: if ours is that
            # unlinked inode, the lock guards nothing; open the new file again.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            raise ColonyError(f"{self.path}: could not take the pid file lock")
        # Ours now; whatever the file said before came from a dead daemon.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock, so no second daemon can have locked
        # this inode in between and then lose its file.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def remove_stale(home: Path) -> bool:
    """Delete a pid file nobody holds (left by a killed daemon); True if one was removed."""
    path = home / PID_FILE
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live daemon holds it
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return False  # replaced meanwhile by a starting daemon's file
        except FileNotFoundError:
            return False
        os.unlink(path)  # under our lock: no daemon can be using this file
        return True
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to signal 0 (zombies then look alive)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    parts = stat.rsplit(")", 1)
    return len(parts) == 2 and parts[1].split()[:1] != ["Z"]
