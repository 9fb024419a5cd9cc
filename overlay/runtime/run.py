"""Process entry for `colony daemon`: load config and identity, open the store, run."""

from __future__ import annotations

from pathlib import Path

import structlog
import trio

from overlay.runtime import config as cfg
from overlay.runtime.daemon import Daemon
from overlay.runtime.identity import KEY_FILE, load_identity
from store.blockstore import open_home_store

log = structlog.get_logger("colony.daemon")


def run_daemon_blocking(home: Path) -> int:
    conf = cfg.load(home)
    keypair = load_identity(home / KEY_FILE)
    with open_home_store(home, conf) as store:
        daemon = Daemon(home, conf, keypair, store)
        trio.run(daemon.run)
    log.info("daemon_stopped")
    return 0
