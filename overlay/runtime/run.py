"""Process entry for `colony daemon`: load config and identity, open the store, run.

The pid file (`<home>/daemon.pid`, locked for the daemon's life) is taken before the
store is opened, so a second daemon on the same home stops with a clear error before
it touches anything.

It sits beside daemon.py, not in process/: it builds the Daemon, and the Daemon imports
process/ (config, identity), so from process/ it would close an import cycle.
"""

from __future__ import annotations

from pathlib import Path

import structlog
import trio

from overlay.core.errors import ColonyError, ConfigError
from overlay.runtime.daemon import Daemon
from overlay.runtime.process import config as cfg
from overlay.runtime.process.identity import KEY_FILE, load_identity
from overlay.runtime.process.pidfile import PidFile
from store.blockstore import open_home_store

log = structlog.get_logger("colony.daemon")


def run_daemon_blocking(home: Path) -> int:
    conf = cfg.load(home)
    keypair = load_identity(home / KEY_FILE)
    with PidFile(home), open_home_store(home, conf) as store:
        daemon = Daemon(home, conf, keypair, store)
        try:
            trio.run(daemon.run)
        except OSError as e:  # e.g. the API port is taken by another daemon
            if daemon.started.is_set():  # not a start-up problem: say what failed
                raise ColonyError(f"daemon stopped: {e.strerror or e}") from None
            raise ConfigError(
                f"cannot start: {e.strerror or e}; is another daemon using this home or "
                "these ports? (see [api] listen and [network] listen in config.toml)"
            ) from None
    log.info("daemon_stopped")
    return 0
