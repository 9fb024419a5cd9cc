"""A log call never raises: a full disk under the daemon's log used to kill it."""

from __future__ import annotations

import errno
import io

import structlog

from overlay.runtime.process import logs


class FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_log_line_on_a_full_disk_is_counted_not_raised() -> None:
    before = logs.dropped_writes
    try:
        logs.configure("info", json=True, stream=FullDisk())
        structlog.get_logger("t").info("something_happened", n=1)
    finally:
        structlog.reset_defaults()
    assert logs.dropped_writes > before


def test_lines_still_reach_a_working_stream() -> None:
    out = io.StringIO()
    try:
        logs.configure("info", json=True, stream=out)
        structlog.get_logger("t").info("something_happened", n=1)
    finally:
        structlog.reset_defaults()
    assert '"event": "something_happened"' in out.getvalue()
