"""structlog set-up: human console output on a tty, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import Processor

LEVELS = ("debug", "info", "warning", "error", "critical")


def configure(
    level: str = "info", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog once per process. `json=None` means: JSON unless stderr is a tty."""
    explicit = stream is not None
    stream = stream or sys.stderr
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    if json is None:
        json = not stream.isatty()
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper())
        ),
        # Resolve the stream at each logger creation (cache is off), not now: a stream
        # captured at configure time may be closed later (pytest's capture, a detached
        # daemon's redirected stderr), and a log call must never raise.
        logger_factory=(
            structlog.PrintLoggerFactory(stream)
            if explicit
            else (lambda *args: structlog.PrintLogger(sys.stderr))
        ),
        cache_logger_on_first_use=False,
    )
    # py-libp2p and others log through stdlib logging; keep them quiet below our level.
    logging.basicConfig(level=max(logging.WARNING, getattr(logging, level.upper())),
                        stream=stream)
