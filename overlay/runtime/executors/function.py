"""Python function executor: call ``module:attr`` in a separate interpreter.

The spec's `function` names an entry point ``package.module:attr`` (``attr`` may be
dotted, e.g. ``mod:Class.method``); `args` and `kwargs` are passed as JSON values.
The call runs in a child process (the node's interpreter by default, ``python -P``
running `fnrunner.py`), so a crash, a segfault or a hang cannot take the daemon down,
and it gets everything the subprocess executor gives: fresh work dir, minimal env
plus the spec's env (PYTHONPATH there decides what is importable besides the work dir
and the interpreter's site-packages), resource limits, process-group kill on timeout
or cancel.

The return value is written as JSON to ``result.json`` (outside the work dir, so it
cannot collide with a declared output) and imported like an output: it is always
``outputs[0]`` of a successful attempt, followed by the declared outputs. An
exception exits 1 with its traceback in the log; a value JSON cannot encode as well.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from overlay.capsule.spec import CapsuleSpec
from overlay.runtime.executors.base import (
    EXIT_OUTPUT_MISSING,
    BaseExecutor,
    Job,
    KillSwitch,
    Outcome,
)
from overlay.runtime.executors.subprocess import rlimits_for, run_group

RUNNER = Path(__file__).with_name("fnrunner.py")
RESULT_NAME = "result.json"
CALL_NAME = "call.json"
_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def function_argv(python: str, job: Job) -> list[str]:
    """Write the call file and return the command that performs the call."""
    spec = job.spec
    call = {"function": spec.function, "args": list(spec.args), "kwargs": dict(spec.kwargs)}
    (job.rundir / CALL_NAME).write_text(json.dumps(call), encoding="utf-8")
    return [python, "-P", str(RUNNER), str(job.rundir / CALL_NAME), str(job.rundir / RESULT_NAME)]


def check_function(spec: CapsuleSpec) -> str | None:
    if not spec.function:
        return "the function executor calls functions; this capsule has a command"
    if not _ENTRY.match(spec.function):
        return f"function {spec.function!r} must be an entry point like package.module:attr"
    return None


def with_result(job: Job, outcome: Outcome) -> Outcome:
    """Put result.json first among the outputs (or fail a 0 exit that left none)."""
    result = job.rundir / RESULT_NAME
    if result.exists():
        return Outcome(outcome.exit_status, outcome.reason, outcome.started, outcome.finished,
                       ((RESULT_NAME, result), *outcome.extra_outputs))  # fmt: skip
    if outcome.exit_status == 0:
        return Outcome(EXIT_OUTPUT_MISSING, "the function wrote no result", outcome.started,
                       outcome.finished)  # fmt: skip
    return outcome


class FunctionExecutor(BaseExecutor):
    kind = "function"

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    def check(self, spec: CapsuleSpec) -> str | None:
        return check_function(spec)

    async def _execute(self, job: Job, kill: KillSwitch) -> Outcome:
        argv = function_argv(self.python, job)
        outcome = await run_group(
            argv, cwd=job.work, env=job.base_env(), log_path=job.log_path,
            rlimits=rlimits_for(job), deadline=job.deadline,
            maxexectime_s=job.req.maxexectime_s, kill=kill,
            grace_s=job.ctx.limits.kill_grace_s,
        )  # fmt: skip
        return with_result(job, outcome)


__all__ = ["FunctionExecutor", "check_function", "function_argv", "with_result"]
