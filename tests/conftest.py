"""Suite-wide fixtures.

Tests that run `colony` in-process (`overlay.cli.main.main`) configure structlog for
the whole process, e.g. a WARNING filter; tests later in the same process that capture
info-level events (`structlog.testing.capture_logs`) then saw nothing. Every test
starts from the configuration the process had before it ran.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _restore_structlog_config() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
