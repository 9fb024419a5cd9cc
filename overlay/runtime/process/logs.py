"""structlog set-up: human console output on a tty, JSON lines otherwise.

`configure` does not import structlog when nothing has yet: importing it costs
~60–120 ms (its package imports `structlog.dev`, hence rich, unconditionally), which
would double the start-up of every `colony` command although most (id, add, cat...)
never log through it. The configuration is then applied by a one-shot import hook
right after structlog is first imported, before the importing module's next line —
so a module doing `log = structlog.get_logger()` at import time is configured exactly
as if `configure` had imported structlog itself. stdlib `logging` (~7 ms) is handled
the same way. The hook classes are duck-typed, not importlib.abc subclasses, so this
module imports nothing costly (`colony --version` imports it for LEVELS).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import importlib.abc
    import importlib.machinery

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


class _ConfigureOnImport:
    """One-shot import hook: runs `apply` right after the top-level module `name` has
    been executed. It finds the real spec with the other finders, wraps only its loader,
    and steps aside while doing so (`busy`) so that it does not find itself."""

    def __init__(self, name: str, apply: Callable[[], None]) -> None:
        self.name, self.apply, self.busy = name, apply, False

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != self.name or self.busy:
            return None
        import importlib.util

        self.busy = True
        try:
            spec = importlib.util.find_spec(name)  # the finders after this one
        finally:
            _drop_hook(self.name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ThenApply(spec.loader, self.apply)  # type: ignore[assignment]
        return spec


class _ThenApply:
    """A loader that delegates to `inner`, then calls `after` once the module ran."""

    def __init__(self, inner: importlib.abc.Loader, after: Callable[[], None]) -> None:
        self._inner, self._after = inner, after

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        self._after()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, get_data, ...
        return getattr(self._inner, name)


def _drop_hook(name: str) -> None:
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not (isinstance(f, _ConfigureOnImport) and f.name == name)]


def _when_imported(name: str, apply: Callable[[], None]) -> None:
    """Run `apply` now if module `name` is loaded, else right after it first is; a later
    call for the same module replaces a pending one."""
    _drop_hook(name)
    if name in sys.modules:
        apply()
    else:
        sys.meta_path.insert(0, _ConfigureOnImport(name, apply))


def configure(
    level: str = "info", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog once per process. `json=None` means: JSON unless stderr is a tty.

    Applied now if structlog (stdlib logging) is imported, else when it first is (see
    the module doc)."""
    explicit = stream is not None
    stream = stream or sys.stderr
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    if json is None:
        json = not stream.isatty()
    colors = stream.isatty()

    def apply_stdlib() -> None:
        import logging

        # py-libp2p and others log through stdlib logging; keep them quiet below our level.
        logging.basicConfig(level=max(logging.WARNING, getattr(logging, level.upper())),
                            stream=stream)

    # stdlib first: structlog imports logging, so a pending stdlib set-up runs first then.
    _when_imported("logging", apply_stdlib)
    _when_imported("structlog", lambda: _configure_structlog(
        level, json, colors, stream if explicit else None))


def _configure_structlog(level: str, json: bool, colors: bool, stream: TextIO | None) -> None:
    """The structlog part of `configure`; `stream=None` means sys.stderr at each use."""
    import logging

    import structlog

    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=colors)
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
            if stream is not None
            else (lambda *args: structlog.PrintLogger(SafeStream(sys.stderr)))  # type: ignore[arg-type]
        ),
        cache_logger_on_first_use=False,
    )
