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


def test_configure_before_structlog_is_imported_applies_on_import() -> None:
    """`configure` defers structlog (costly to import) until something imports it; a
    module-level `structlog.get_logger()` then logs exactly as configured."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    probe = (
        "import sys\n"
        "from overlay.runtime.process import logs\n"
        "logs.configure('warning', json=True)\n"
        "assert 'structlog' not in sys.modules\n"
        "import structlog\n"
        "log = structlog.get_logger('t')\n"
        "log.info('hidden')\n"
        "log.warning('shown', n=2)\n"
    )
    root = Path(__file__).resolve().parents[4]
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=60, check=True)
    assert '"event": "shown"' in out.stderr and '"n": 2' in out.stderr
    assert "hidden" not in out.stderr and out.stdout == ""
