"""Starting and killing local runs, with a workflow child's inputs resolved first.

The capsule core emits `RunRequested` / `KillRequested`; `Runs` hands them to the
executors (`Attempts`, overlay/runtime/executors). A workflow child runs with its
parents' outputs as extra inputs (`with_inputs`): when the core's `RunRequested`
carries them (`parent_outputs`, learnt from custody) they are used at once;
otherwise each parent's accepted receipt is read from its custodians
(`find_record`, up to `DEP_RESOLVE_TRIES` times with back-off) before the run starts.

Invariants: at most one resolution per (capsule, token) runs at a time; a kill during
resolution cancels it and reports the attempt once (`EXIT_CANCELLED`); a parent with
no successful receipt ends the attempt once (`EXIT_SETUP_FAILED`), never runs it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import trio

from overlay.capsule import events as cev
from overlay.capsule.executor import CapsuleExited
from overlay.capsule.leases import CustodyRecord
from overlay.runtime.context import Cores, Spawn
from overlay.runtime.executors import EXIT_CANCELLED, EXIT_SETUP_FAILED, Attempts

DEP_RESOLVE_TRIES = 10

FindRecord = Callable[[str], Awaitable[CustodyRecord | None]]


def with_inputs(ev: cev.RunRequested, extra: list[str]) -> cev.RunRequested:
    """`ev` for a local run whose spec also lists `extra` (parents' outputs) as inputs.

    They are fetched and materialised like any input, at ``inputs/<cid>``, and listed
    in order, one path per line, in `COLONY_DEP_OUTPUTS` (relative to the work dir).
    The signed capsule, and so its id, is unchanged; only this run sees the extra
    inputs.
    """
    spec = ev.capsule.spec
    inputs = tuple(dict.fromkeys((*spec.inputs, *extra)))
    env = dict(spec.env)
    env.setdefault("COLONY_DEP_OUTPUTS", "\n".join(f"inputs/{c}" for c in extra))
    local = replace(spec, inputs=inputs, env=tuple(sorted(env.items())))
    return replace(ev, capsule=replace(ev.capsule, spec=local))


class Runs:
    """`RunRequested` / `KillRequested` → the executors, dependencies resolved first."""

    def __init__(
        self, attempts: Attempts, cores: Cores, spawn: Spawn, find_record: FindRecord
    ) -> None:
        self.attempts = attempts
        self.cores = cores
        self.spawn = spawn
        self.find_record = find_record
        #: Attempts of workflow children waiting for their parents' outputs.
        self._resolving: dict[tuple[str, int], trio.CancelScope] = {}

    def run(self, ev: cev.RunRequested) -> None:
        parents = getattr(ev, "parent_outputs", ())
        if parents:  # the core already learnt the parents' outputs from custody
            self.attempts.handle(self.spawn, with_inputs(ev, [p.cid for p in parents]))
        elif ev.capsule.spec.dependencies:
            self._start_resolving(ev)
        else:
            self.attempts.handle(self.spawn, ev)

    def kill(self, ev: cev.KillRequested) -> None:
        scope = self._resolving.pop((ev.capsule_id, ev.token), None)
        if scope is not None:
            scope.cancel()
            self.report_unstarted(ev.capsule_id, ev.token, EXIT_CANCELLED,
                                  f"killed while resolving dependencies: {ev.reason}")  # fmt: skip
        else:
            self.attempts.handle(self.spawn, ev)

    def report_unstarted(self, capsule_id: str, token: int, status: int, why: str) -> None:
        now = time.time()
        self.cores.submit(CapsuleExited(capsule_id, token, status, (), "", now, now, why))

    def _start_resolving(self, ev: cev.RunRequested) -> None:
        key = (ev.capsule.id, ev.token)
        if key in self._resolving:
            return
        scope = trio.CancelScope()
        self._resolving[key] = scope
        self.spawn(self._resolve_dependencies, ev, scope)

    async def _resolve_dependencies(self, ev: cev.RunRequested, scope: trio.CancelScope) -> None:
        """A workflow child runs with its parents' outputs as extra inputs.

        The signed spec names parents by capsule id only (their outputs did not exist
        when it was signed). Custody places the child only after every parent
        succeeded; when the core's `RunRequested` does not carry the parents' outputs
        itself, we read each parent's accepted receipt from its custodians and run
        the spec with those output CIDs as extra inputs (`with_inputs`).
        """
        key = (ev.capsule.id, ev.token)
        spec = ev.capsule.spec
        extra: list[str] = []  # parents' output CIDs, in dependency order
        why = ""
        with scope:
            for dep in spec.dependencies:
                rec = None
                for attempt in range(DEP_RESOLVE_TRIES):
                    rec = await self.find_record(dep)
                    if rec is not None and rec.receipt is not None:
                        break
                    await trio.sleep(min(2.0, 0.2 * 2**attempt))
                if rec is None or rec.receipt is None or not rec.receipt.succeeded:
                    why = f"dependency {dep}: no successful receipt found"
                    break
                extra.extend(rec.receipt.outputs)
        if scope.cancelled_caught:
            return  # KillRequested reported it already
        if self._resolving.pop(key, None) is None:
            return
        if why:
            self.report_unstarted(key[0], key[1], EXIT_SETUP_FAILED, why)
            return
        self.attempts.handle(self.spawn, with_inputs(ev, extra))
