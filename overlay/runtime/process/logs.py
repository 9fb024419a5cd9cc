"""structlog set-up: human console output on a tty, JSON lines otherwise."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import Processor

LEVELS = ("debug", "info", "warning", "error", "critical")

#: Log writes that failed (a full disk under the log file, a closed pipe; a line is
#: one or two writes).
dropped_writes = 0


class SafeStream:
    """A text stream whose writes never raise: a log call must not take the daemon
    down when the disk holding its log is full (ENOSPC) or the reader went away;
    such writes are counted in `dropped_writes` instead."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        global dropped_writes
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # ValueError: write to a closed file
            dropped_writes += 1
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


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
            (lambda *args: structlog.PrintLogger(SafeStream(stream)))  # type: ignore[arg-type]
            if explicit
            else (lambda *args: structlog.PrintLogger(SafeStream(sys.stderr)))  # type: ignore[arg-type]
        ),
        cache_logger_on_first_use=False,
    )
    # py-libp2p and others log through stdlib logging; keep them quiet below our level.
    logging.basicConfig(level=max(logging.WARNING, getattr(logging, level.upper())),
                        stream=stream)
