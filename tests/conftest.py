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
from typing import Any

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


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pytest-xdist is a dev dependency; plain pytest runs without it
    LoadScopeScheduling = None


#: Integration files that may run beside one other integration test: at most one or
#: two daemons or in-process transports on 127.0.0.1 with ports picked free, no
#: network namespace, no fixed port, no CPU starvation, no wait sized for an idle
#: machine. They are their own work units, handed out after everything else (see
#: `_IntegrationOnOneWorker`), so the worker that ends its share first runs them while
#: the other is still in the integration unit: in the CI run of stop 29 the integration
#: worker ran ~3.5 min past the other's last test.
SHARED_INTEGRATION = frozenset(
    f"tests/integration/test_{name}.py"
    for name in (
        "api_openapi", "capsule_bad_input", "capsule_trust", "cli_node",
        "daemon_api_addr", "daemon_bad_input", "daemon_detach", "dag_stream", "dht_closer_addrs",
        "dialer_backoff",
        "edge_doctor", "edge_holepunch", "executor_function", "executor_subprocess",
        "fetch_durable", "receipt_check", "relay_circuit", "relay_v2", "sdk_docs",
        "store_car_interop", "store_cid_interop", "store_cli", "store_crash_memory",
        "topic_chains", "transport_js_interop", "transport_libp2p", "transport_native",
        "transport_quic", "transport_quic_interop", "webrtc_bridge", "webrtc_signal",
    )
)


def _scope(nodeid: str) -> str:
    """The work unit a test belongs to under `make test`'s `--dist loadgroup`: every
    integration test in one unit, so they run on one worker, one at a time and in file
    order, as without xdist (they start daemons, bind ports, build network namespaces
    and bound their waits for a machine running one of them at a time), except the
    `SHARED_INTEGRATION` files; any other test in its file's unit (module fixtures are
    built once), those units spread over the workers beside the integration one."""
    path = nodeid.split("::", 1)[0]
    if "/integration/" in "/" + path and path not in SHARED_INTEGRATION:
        return "integration"
    return path


if LoadScopeScheduling is not None:

    class _IntegrationOnOneWorker(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            # Shared integration files go last: whichever worker runs dry first takes
            # them, beside the other worker's integration unit.
            # The integration unit goes first, so it starts at once on the first worker.
            queue = self.workqueue
            for scope in [s for s in queue if s in SHARED_INTEGRATION]:
                queue.move_to_end(scope)
            if "integration" in queue:
                queue.move_to_end("integration", last=False)
            super()._assign_work_unit(node)

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        """Our grouping for `--dist loadgroup`. xdist's own reads `xdist_group` marks by
        renaming `item._nodeid`, which pytest 9.2 no longer reads (node ids moved to
        `_id`): the marks were silently ignored and integration tests ran two at a
        time. The scheduler hook is public API; the grouping comes from the path."""
        if config.getvalue("dist") != "loadgroup":
            return None
        return _IntegrationOnOneWorker(config, log)


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
