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
import time
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


#: Integration files that may run beside one other integration test: daemons (five at
#: most) or in-process transports on 127.0.0.1 with ports picked free, no network
#: namespace, no fixed port, no CPU starvation, no wait sized for an idle machine. They
#: are their own work units, handed out after everything else (see
#: `_IntegrationOnOneWorker`), so the worker that ends its share first runs them while
#: the other is still in the integration unit: in the CI run of stop 29 the integration
#: worker ran ~3.5 min past the other's last test; in stop 31's (14:13) it was again the
#: long pole. Each with the seconds its tests took in the full `-n 2` run of stop 33,
#: under load (only the order matters; stop 30-32's figures, from runs beside one
#: other file, were up to 10x those and no longer ranked them): they are handed out
#: longest first, so the last units to go are short and both workers end close
#: together. A new file: its seconds from one run beside another.
_SHARED_SECONDS = {
    # Moved from the integration unit in stop 32 (one to five daemons each on 127.0.0.1).
    "capsule_colony": 39, "faults_kill9": 24, "gateway": 12, "trust_private_blocks": 29,
    "sync_labels": 12, "triggers": 25, "demo": 17, "federation_revocations": 18,
    "capsule_custody_restart": 19, "trust_colony": 31, "federation": 18,
    "store_full_disk": 8, "faults_clock_skew": 6, "node_labels": 6,
    "daemon_persist": 9, "event_handlers": 9, "dht_client_mode": 3,
    "daemon_bootstrap": 6, "edge_dialback": 1,
    # js-libp2p QUIC on 127.0.0.1 (stop 32); its js peer file is replaced atomically.
    "transport_quic_js_interop": 5,
    # Not test_bitswap_js_interop: test_mdns (namespaces: integration unit) runs its
    # helia peers from the same cache directory, copying peer.mjs in place on start.
    # One or two daemons or in-process transports each (stop 30).
    "store_cli": 13, "daemon_detach": 14, "store_cid_interop": 9,
    "store_crash_memory": 9, "store_car_interop": 8, "api_openapi": 9,
    "daemon_bad_input": 4, "transport_libp2p": 6, "dht_closer_addrs": 6,
    "capsule_trust": 5, "edge_doctor": 2, "daemon_api_addr": 4, "transport_quic": 2,
    "transport_js_interop": 2, "capsule_bad_input": 7, "webrtc_signal": 2,
    "fetch_durable": 4, "transport_native": 3, "edge_holepunch": 8, "cli_node": 1,
    "executor_function": 2, "sdk_docs": 3, "executor_subprocess": 4, "topic_chains": 0,
    "dag_stream": 1, "relay_circuit": 1, "relay_v2": 1, "webrtc_bridge": 0,
    "dialer_backoff": 1, "transport_quic_interop": 0, "receipt_check": 0,
}
SHARED_ORDER = tuple(
    f"tests/integration/test_{name}.py"
    for name, _ in sorted(_SHARED_SECONDS.items(), key=lambda kv: -kv[1])
)
SHARED_INTEGRATION = frozenset(SHARED_ORDER)


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
            # Shared integration files go last, longest first: whichever worker runs
            # dry first takes them, beside the other worker's integration unit.
            # The integration unit goes first, so it starts at once on the first worker.
            queue = self.workqueue
            for scope in [s for s in SHARED_ORDER if s in queue]:
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


#: Under xdist, on the controller: worker → [seconds in tests, tests, seconds in the
#: integration unit, seconds in shared integration files, seconds since the session
#: started when its last report came].
_BY_WORKER: dict[str, list[float]] = {}
_SESSION_T0 = time.monotonic()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    node = getattr(report, "node", None)  # set by xdist on reports it forwards
    if node is None:
        return
    row = _BY_WORKER.setdefault(str(node.gateway.id), [0.0, 0, 0.0, 0.0, 0.0])
    row[0] += report.duration
    row[1] += report.when == "call"
    scope = _scope(report.nodeid)
    if scope == "integration":
        row[2] += report.duration
    elif scope in SHARED_INTEGRATION:
        row[3] += report.duration
    row[4] = time.monotonic() - _SESSION_T0


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How long each worker was busy and when it ran dry: the figures for balancing
    the integration unit against the rest (`SHARED_INTEGRATION`)."""
    for worker, (busy, tests, integ, shared, last) in sorted(_BY_WORKER.items()):
        terminalreporter.write_line(
            f"worker {worker}: {busy:.0f} s in {tests:.0f} tests (integration unit "
            f"{integ:.0f} s, shared integration files {shared:.0f} s), last test ended "
            f"{last:.0f} s into the session"
        )


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
