"""Suite-wide fixtures.

The py-libp2p transport backend is the optional extra `colony[pylibp2p]`: without it,
every test parametrized with the "py-libp2p" stack is skipped, with that reason.

Tests that run `colony` in-process (`overlay.cli.main.main`) configure structlog for
the whole process, e.g. a WARNING filter; tests later in the same process that capture
info-level events (`structlog.testing.capture_logs`) then saw nothing. Every test
starts from the configuration the process had before it ran, and so does every
module: a module-scoped fixture that runs `colony` in-process (test_federation's
colonies) configures before any function-scoped fixture could save the state.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
import structlog

HAVE_PYLIBP2P = importlib.util.find_spec("libp2p") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_PYLIBP2P:
        return
    skip = pytest.mark.skip(
        reason="py-libp2p stack: needs the pylibp2p extra (pip install -e '.[pylibp2p]')"
    )
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "py-libp2p" in callspec.params.values():
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_structlog_config() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(autouse=True, scope="module")
def _restore_structlog_config_per_module() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
