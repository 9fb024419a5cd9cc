"""Attempts: the glue between the executor core's events and the executors.

The daemon owns one `Attempts` and hands it every runtime-facing event the node core
emits; it starts one task per `RunRequested` in the daemon's nursery, routes
`KillRequested` to that attempt's `KillSwitch`, and reports each end through
`on_exit(CapsuleExited)` (the daemon passes ``driver.submit``)::

    attempts = Attempts(ctx, {k: executor_for(k) for k in await available_kinds()},
                        on_exit=driver.submit, fetch=fetch_inputs)
    # in the daemon's emit callback:
    attempts.handle(nursery.start_soon, event)  # True if RunRequested / KillRequested

Rules:

- One attempt per (capsule id, token). A second `RunRequested` for the same pair is
  ignored (the core never sends one; a duplicate must not run the work twice).
- `KillRequested` for an attempt that already ended is ignored (the core then also
  ignores the exit it gets; see `Executor.on_exited`).
- `InputMissing`: when a `fetch(cid)` coroutine is given it is awaited for the missing
  input (the daemon's network fetch) and the attempt is run again, at most
  `max_fetches` times; otherwise, or when fetching fails, the attempt ends with
  `EXIT_SETUP_FAILED` and the reason names the CID.
- A kind this node has no executor for, or an executor that raises (a bug), ends the
  attempt with `EXIT_SETUP_FAILED`; the exception is logged, the daemon keeps running.
- Every attempt reports exactly once, except when the daemon's nursery is cancelled
  (shutdown): the work is killed and nothing is reported (custody re-offers the lease).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

import structlog
import trio

from overlay.capsule.events import KillRequested, RunRequested
from overlay.capsule.executor import CapsuleExited
from overlay.core.errors import ColonyError
from overlay.runtime.executors.base import (
    EXIT_CANCELLED,
    EXIT_SETUP_FAILED,
    BaseExecutor,
    ExecContext,
    ExecRequest,
    ExecResult,
    InputMissing,
    KillSwitch,
    kind_of,
)

log = structlog.get_logger("colony.executors.attempts")


class Attempts:
    def __init__(
        self,
        ctx: ExecContext,
        executors: Mapping[str, BaseExecutor],
        on_exit: Callable[[CapsuleExited], object],
        fetch: Callable[[str], Awaitable[None]] | None = None,
        max_fetches: int = 8,
    ) -> None:
        self.ctx = ctx
        self.executors = dict(executors)
        self.on_exit = on_exit
        self.fetch = fetch
        self.max_fetches = max_fetches
        self.running: dict[tuple[str, int], KillSwitch] = {}
        self.stats: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def handle(self, spawn: Callable[..., None], event: object) -> bool:
        """Act on a runtime-facing event; False for events this class does not handle.
        `spawn` starts a task in the daemon's nursery (`nursery.start_soon`)."""
        if isinstance(event, RunRequested):
            req = ExecRequest.from_event(event)
            key = (req.capsule_id, req.token)
            if key in self.running:
                self._count("duplicate_runs_ignored")
                return True
            kill = KillSwitch()
            self.running[key] = kill
            spawn(self._attempt, req, kill)
            return True
        if isinstance(event, KillRequested):
            switch = self.running.get((event.capsule_id, event.token))
            if switch is None:
                self._count("kills_after_exit")
            else:
                switch.kill(event.reason)
            return True
        return False

    async def _attempt(self, req: ExecRequest, kill: KillSwitch) -> None:
        try:
            result = await self._run(req, kill)
        finally:
            del self.running[(req.capsule_id, req.token)]
        self._count("attempts_reported")
        self.on_exit(result.to_exited())

    async def _fetch_unless_killed(self, cid: str, kill: KillSwitch) -> str | None:
        """Await the daemon's fetch of `cid`: None when done, else why the attempt ends."""
        assert self.fetch is not None
        fetch = self.fetch
        outcome: list[str | None] = [f"killed while fetching inputs: {kill.reason}"]
        async with trio.open_nursery() as nursery:

            async def stop_on_kill() -> None:
                await kill.wait()
                outcome[0] = f"killed while fetching inputs: {kill.reason}"
                nursery.cancel_scope.cancel()

            async def do_fetch() -> None:
                try:
                    await fetch(cid)
                    outcome[0] = None
                except (ColonyError, OSError) as err:  # caught here: nurseries wrap errors
                    outcome[0] = f"cannot fetch input {cid}: {err}"
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_kill)
            nursery.start_soon(do_fetch)
        return outcome[0]

    async def _run(self, req: ExecRequest, kill: KillSwitch) -> ExecResult:
        kind = kind_of(req.spec)
        executor = self.executors.get(kind)
        if executor is None:
            return ExecResult.setup_failed(req, f"no {kind} executor on this node")
        fetched = 0
        while True:
            try:
                return await executor.run(req, self.ctx, kill)
            except InputMissing as e:
                if self.fetch is None or fetched >= self.max_fetches or kill.killed:
                    return ExecResult.setup_failed(req, str(e))
                fetched += 1
                why = await self._fetch_unless_killed(e.input_cid, kill)
                if why is not None:
                    status = EXIT_CANCELLED if kill.killed else EXIT_SETUP_FAILED
                    now = time.time()
                    return ExecResult(req.capsule_id, req.token, status, (), "", now, now, why)
            except Exception as e:  # a bug in an executor must not take the daemon down
                log.exception("executor_crashed", capsule=req.capsule_id, token=req.token)
                self._count("executor_errors")
                return ExecResult.setup_failed(req, f"executor error: {type(e).__name__}: {e}")
