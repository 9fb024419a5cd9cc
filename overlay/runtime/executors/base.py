"""The executor contract: run one leased capsule attempt and report how it ended.

The sans-IO executor core (`overlay.capsule.executor`) decides *whether* to run; the
runtime turns its `RunRequested(capsule, token, maxexectime_s)` event into one call

    result = await executor.run(ExecRequest.from_event(ev), ctx, kill)

and feeds `result.to_exited()` (a `CapsuleExited` command) back to the core. A
`KillRequested(capsule_id, token, reason)` event becomes `kill.kill(reason)`; `run`
then stops the work and still returns a result (status `EXIT_CANCELLED`), with the
log of what ran so far. Cancelling the task that awaits `run` (daemon shutdown) also
kills the work, in a shielded clean-up, and re-raises `trio.Cancelled`.

What every kind shares (`BaseExecutor.run`, a template method):

1. Inputs must be local. Each input CID is checked block by block through the store's
   reference index *before* anything starts; a missing block raises `InputMissing`
   naming the input and the block (fetching is the daemon's job; it calls again).
2. A fresh run directory ``<workdir_root>/<capsule id>.<token>/`` holds ``work/`` (the
   process's cwd; inputs exported to ``work/inputs/<cid>``), ``log`` (stdout and
   stderr, interleaved as written) and whatever the kind needs (scripts, results).
3. The kind runs the work (`_execute`) until it ends, `maxexectime_s` passes (from the
   call of `run`, which is when the core armed its own kill timer) or `kill` fires.
4. Declared outputs (paths relative to ``work/``, files or directory trees) are
   imported into the store; the log too (its CID is the log CID). Both are pinned
   recursively under the name ``capsule/<capsule id>`` so `gc` keeps them until the
   daemon unpins them. The run directory is then removed (unless `keep_rundirs`).

Exit status (what `ExecResult.exit_status` and the receipt carry):

- ``0..255``: the process's own exit code (``0`` = success).
- ``128 + n``: the process was ended by signal ``n`` (shell and Slurm convention;
  ``137`` = SIGKILL, ``143`` = SIGTERM, ``152`` = SIGXCPU).
- negative: the executor ended the attempt, not the program:
  `EXIT_SETUP_FAILED` (-1: could not start: no such command, bad spec, sbatch refused),
  `EXIT_TIMEOUT` (-2: maxexectime exceeded, killed), `EXIT_CANCELLED` (-3: killed on
  request), `EXIT_OUTPUT_MISSING` (-4: exited 0 but a declared output does not exist),
  `EXIT_LOST` (-5: the batch system lost the job: node failure, preemption, purged),
  `EXIT_SYNC_FAILED` (-6: exited 0 but a sync directive's push was refused, e.g. by
  its conflict rule; docs/sync.md).
  `reason` says what happened in words.

`outputs` holds the CIDs of the declared outputs that exist, in declaration order, so
it lines up with `spec.outputs` exactly when the attempt succeeded (the function
executor puts its ``result.json`` first; see function.py). `output_cids` maps every
imported path to its CID.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

import structlog
import trio

from overlay.capsule.events import RunRequested
from overlay.capsule.executor import CapsuleExited
from overlay.capsule.spec import CapsuleSpec
from overlay.core.cid import Cid
from overlay.core.errors import ColonyError, InvalidCid
from store.blockstore import BlockNotFound, BlockStore
from store.exporter import Exporter
from store.importer import Importer, ImportOptions
from store.pins import Pins, walk

log = structlog.get_logger("colony.executors")

EXIT_SETUP_FAILED = -1
EXIT_TIMEOUT = -2
EXIT_CANCELLED = -3
EXIT_OUTPUT_MISSING = -4
EXIT_LOST = -5
EXIT_SYNC_FAILED = -6

#: PATH of the minimal environment every capsule process starts from (`Job.base_env`).
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
LOG_NAME = "log"
WORK_NAME = "work"
INPUTS_NAME = "inputs"
PIN_PREFIX = "capsule/"


class ExecutorError(ColonyError):
    """An attempt that cannot be started for a reason the caller must handle."""


class InputMissing(ExecutorError):
    """An input CID is not (completely) in the local store; fetch it, then run again."""

    def __init__(self, input_cid: str, block: str) -> None:
        self.input_cid = input_cid
        self.block = block
        detail = "" if block == input_cid else f": block {block} of it is missing"
        super().__init__(
            f"input {input_cid} is not in the local store{detail} "
            "(fetch it before running the capsule)"
        )


class UnknownExecutor(ExecutorError):
    """`executor_for` of a kind this node does not have."""


@dataclass(frozen=True, slots=True)
class ExecRequest:
    """One attempt: which capsule, under which lease token, for how long at most."""

    capsule_id: str
    token: int
    spec: CapsuleSpec
    maxexectime_s: float = 0.0  # 0 = no limit
    #: Workflow parents' outputs as (path under inputs/, cid): "<parent>/<name>".
    parent_outputs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_event(cls, ev: RunRequested) -> ExecRequest:
        parents = tuple((p.path, p.cid) for p in ev.parent_outputs)
        return cls(ev.capsule.id, ev.token, ev.capsule.spec, ev.maxexectime_s, parents)


def kind_of(spec: CapsuleSpec) -> str:
    """The executor kind a spec asks for: ``conditions.executor``, else by its shape."""
    if spec.conditions.executor:
        return spec.conditions.executor
    return "function" if spec.function else "subprocess"


@dataclass(frozen=True, slots=True)
class ExecResult:
    capsule_id: str
    token: int
    exit_status: int
    outputs: tuple[str, ...]
    log_cid: str
    started: float
    finished: float
    reason: str = ""
    output_cids: dict[str, str] = field(default_factory=dict)
    missing_outputs: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.exit_status == 0

    def to_exited(self) -> CapsuleExited:
        """The command the daemon submits to the node's core."""
        return CapsuleExited(self.capsule_id, self.token, self.exit_status, self.outputs,
                             self.log_cid, self.started, self.finished,
                             self.reason)  # fmt: skip

    @classmethod
    def setup_failed(cls, req: ExecRequest, reason: str) -> ExecResult:
        """A result for an attempt that never started (e.g. inputs unobtainable)."""
        now = time.time()
        return cls(req.capsule_id, req.token, EXIT_SETUP_FAILED, (), "", now, now, reason)


class KillSwitch:
    """Set by the daemon on `KillRequested`; the running attempt watches it."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self.reason = ""

    def kill(self, reason: str = "kill requested") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def killed(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass(frozen=True, slots=True)
class ExecLimits:
    """Resource limits applied to every process an executor starts.

    Enforced with setrlimit in the child (per process, inherited by its children):
    RLIMIT_AS from ``conditions.mem_mib`` (or `default_mem_mib`; 0 = unlimited),
    RLIMIT_CPU = maxexectime × max(1, cpu cores) + `cpu_slack_s` (0 = unlimited when
    there is no maxexectime), RLIMIT_NOFILE = `max_open_files`, RLIMIT_CORE = 0 (no
    core dumps filling the disk), RLIMIT_FSIZE = `max_file_bytes` (0 = unlimited).
    """

    max_open_files: int = 1024
    default_mem_mib: int = 0
    cpu_slack_s: float = 5.0
    max_file_bytes: int = 0
    kill_grace_s: float = 2.0


class SyncHooks(Protocol):
    """Sync directives (overlay/capsule/sync_spec.py), done by the node for its runs."""

    async def before(self, capsule_id: str, spec: CapsuleSpec, work: Path) -> None:
        """Write each pulled label's version at ``work/<dir>``; ColonyError if not."""
        ...

    async def after(self, capsule_id: str, spec: CapsuleSpec, work: Path) -> str | None:
        """Push each ``work/<dir>``; why a push was refused, or None."""
        ...


@dataclass
class ExecContext:
    """What the node gives its executors: where to work and where blocks live."""

    store: BlockStore
    workdir_root: Path
    limits: ExecLimits = field(default_factory=ExecLimits)
    import_options: ImportOptions = field(default_factory=ImportOptions)
    pin: bool = True
    keep_rundirs: bool = False
    #: Sync directives' pulls and pushes (None: a spec with sync fails to start).
    sync: SyncHooks | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A prepared attempt, handed to the kind-specific `_execute`."""

    req: ExecRequest
    ctx: ExecContext
    rundir: Path
    work: Path
    log_path: Path
    deadline: float  # trio clock; inf = none

    @property
    def spec(self) -> CapsuleSpec:
        return self.req.spec

    def base_env(self) -> dict[str, str]:
        """A minimal environment (not the daemon's), then the spec's `env` on top."""
        env = {
            "PATH": SAFE_PATH,
            "HOME": str(self.work),
            "TMPDIR": str(self.work),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "COLONY_CAPSULE_ID": self.req.capsule_id,
            "COLONY_TOKEN": str(self.req.token),
            "COLONY_WORKDIR": str(self.work),
            "COLONY_INPUTS": str(self.work / INPUTS_NAME),
        }
        env.update(dict(self.spec.env))
        return env


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the work ended, as the kind saw it."""

    exit_status: int
    reason: str
    started: float
    finished: float
    extra_outputs: tuple[tuple[str, Path], ...] = ()  # (name, path) imported first


def signal_status(signum: int) -> int:
    return 128 + signum


def describe_status(status: int) -> str:
    if status > 128:
        try:
            return f"killed by {signal.Signals(status - 128).name}"
        except ValueError:
            return f"exit status {status}"
    return f"exit status {status}"


def output_path(work: Path, rel: str) -> Path:
    """The path of a declared output inside `work`; refuses anything that escapes it."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        raise ExecutorError(f"output {rel!r} must be a relative path inside the work dir")
    full = work / p
    # Follow symlinks: a capsule must not publish /etc/shadow via `ln -s`.
    resolved = full.resolve()
    if resolved != work.resolve() and work.resolve() not in resolved.parents:
        raise ExecutorError(f"output {rel!r} points outside the work dir")
    return full


# ---------------------------------------------------------------- store I/O (threads)


def check_inputs(store: BlockStore, inputs: tuple[str, ...]) -> list[Cid]:
    """Parse each input and check every block of its DAG is local, else InputMissing."""
    cids: list[Cid] = []
    with store.reader() as r:
        for text in inputs:
            try:
                cid = Cid.parse(text)
            except InvalidCid as e:
                raise ExecutorError(f"input {text!r}: {e}") from None
            try:
                for _ in walk(r, cid):
                    pass
            except BlockNotFound as e:
                raise InputMissing(text, str(e.cid)) from None
            cids.append(cid)
    return cids


def materialise_inputs(store: BlockStore, inputs: list[Cid], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    exporter = Exporter(store)
    for cid in inputs:
        out = dest / str(cid)
        if not out.exists():
            exporter.get(cid, out)


def materialise_parent_outputs(
    store: BlockStore, outputs: tuple[tuple[str, str], ...], dest: Path
) -> None:
    """Workflow parents' outputs at ``inputs/<parent>/<name>`` (their CIDs must be
    local: the daemon lists them as inputs too, so they are fetched first)."""
    exporter = Exporter(store)
    for rel, text in outputs:
        out = output_path(dest, rel)  # relative, no "..", stays inside inputs/
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists():
            exporter.get(Cid.parse(text), out)


def import_results(
    ctx: ExecContext,
    capsule_id: str,
    paths: list[tuple[str, Path]],
    log_path: Path,
) -> tuple[dict[str, str], str]:
    """Import outputs and the log; pin them (under the store's shared lock, so a
    concurrent gc cannot sweep them between import and pin)."""
    store = ctx.store
    found: dict[str, str] = {}
    with store.lock(exclusive=False):
        imp = Importer(store, ctx.import_options)
        roots: list[Cid] = []
        for name, p in paths:
            added = imp.add_path(p, recursive=True)
            found[name] = str(added.cid)
            roots.append(added.cid)
        log_added = imp.add_path(log_path)
        roots.append(log_added.cid)
        if ctx.pin:
            pins = Pins(store)
            for cid in roots:
                pins.add(cid, recursive=True, name=PIN_PREFIX + capsule_id)
    return found, str(log_added.cid)


# ---------------------------------------------------------------- the template


class BaseExecutor(ABC):
    """Shared pipeline; kinds implement `_execute` (and may refine `check`)."""

    kind: str = ""

    def check(self, spec: CapsuleSpec) -> str | None:
        """Why this kind cannot run `spec` (before anything starts), or None."""
        return None

    @abstractmethod
    async def _execute(self, job: Job, kill: KillSwitch) -> Outcome:
        """Run the work; return when it ended, timed out (job.deadline) or was killed.
        Must kill everything it started before returning or propagating Cancelled."""

    async def run(self, req: ExecRequest, ctx: ExecContext, kill: KillSwitch) -> ExecResult:
        deadline = (
            trio.current_time() + req.maxexectime_s if req.maxexectime_s > 0 else float("inf")
        )
        cids = await trio.to_thread.run_sync(check_inputs, ctx.store, req.spec.inputs)
        rundir = ctx.workdir_root / f"{req.capsule_id}.{req.token}"
        if rundir.exists():  # a leftover of a crashed daemon: this token starts afresh
            await trio.to_thread.run_sync(shutil.rmtree, rundir)
        work = rundir / WORK_NAME
        work.mkdir(parents=True, mode=0o700)
        job = Job(req, ctx, rundir, work, rundir / LOG_NAME, deadline)
        log.info("capsule_run_started", capsule=req.capsule_id, token=req.token,
                 kind=self.kind, rundir=str(rundir))  # fmt: skip
        try:
            return await self._run_job(job, cids, kill)
        finally:
            if not ctx.keep_rundirs:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(lambda: shutil.rmtree(rundir, ignore_errors=True))

    async def _run_job(self, job: Job, cids: list[Cid], kill: KillSwitch) -> ExecResult:
        req, ctx = job.req, job.ctx
        why = self.check(req.spec)
        if why is None:
            try:
                await trio.to_thread.run_sync(
                    materialise_inputs, ctx.store, cids, job.work / INPUTS_NAME
                )
                if req.parent_outputs:
                    await trio.to_thread.run_sync(materialise_parent_outputs, ctx.store,
                                                  req.parent_outputs, job.work / INPUTS_NAME)
            except (ColonyError, OSError) as e:
                why = f"cannot materialise inputs: {e}"
        if why is None and req.spec.sync:
            if ctx.sync is None:
                why = "this node cannot sync labels (no sync service)"
            else:
                try:
                    await ctx.sync.before(req.capsule_id, req.spec, job.work)
                except (ColonyError, OSError) as e:
                    why = f"cannot pull sync labels: {e}"
        if why is not None:
            now = time.time()
            outcome = Outcome(EXIT_SETUP_FAILED, why, now, now)
        elif kill.killed:
            now = time.time()
            outcome = Outcome(EXIT_CANCELLED, f"killed before start: {kill.reason}", now, now)
        elif trio.current_time() >= job.deadline:  # inputs took the whole maxexectime
            now = time.time()
            outcome = Outcome(EXIT_TIMEOUT, f"maxexectime {req.maxexectime_s:g}s exceeded "
                              "before start (materialising inputs)", now, now)  # fmt: skip
        else:
            outcome = await self._execute(job, kill)
            if outcome.exit_status == 0 and req.spec.sync and ctx.sync is not None:
                refused = await ctx.sync.after(req.capsule_id, req.spec, job.work)
                if refused:
                    outcome = Outcome(EXIT_SYNC_FAILED, refused, outcome.started, time.time(),
                                      outcome.extra_outputs)
        return await self._collect(job, outcome)

    async def _collect(self, job: Job, outcome: Outcome) -> ExecResult:
        spec = job.spec
        status, reason = outcome.exit_status, outcome.reason
        present: list[tuple[str, Path]] = list(outcome.extra_outputs)
        missing: list[str] = []
        for rel in spec.outputs:
            try:
                p = output_path(job.work, rel)
            except ExecutorError as e:
                missing.append(rel)
                reason = reason or str(e)
                continue
            if p.exists() or p.is_symlink():
                present.append((rel, p))
            else:
                missing.append(rel)
        if status == 0 and missing:
            status = EXIT_OUTPUT_MISSING
            reason = "declared output missing: " + ", ".join(missing)
        trailer = f"[colony] {describe_status(status) if status >= 0 else 'status ' + str(status)}"
        with open(job.log_path, "a", encoding="utf-8") as f:
            f.write(f"\n{trailer}{': ' + reason if reason else ''}\n")
        try:
            found, log_cid = await trio.to_thread.run_sync(
                import_results, job.ctx, job.req.capsule_id, present, job.log_path
            )
        except (ColonyError, OSError) as e:
            # An output the store cannot take (unreadable file, fifo…) fails the attempt.
            found, log_cid = {}, ""
            if status == 0:
                status = EXIT_OUTPUT_MISSING
            reason = f"cannot import outputs: {e}"
        outputs = tuple(found[n] for n, _ in present if n in found)
        result = ExecResult(job.req.capsule_id, job.req.token, status, outputs, log_cid,
                            outcome.started, outcome.finished, reason, found,
                            tuple(missing))  # fmt: skip
        seconds = round(outcome.finished - outcome.started, 3)
        log.info("capsule_run_finished", capsule=job.req.capsule_id, token=job.req.token,
                 kind=self.kind, exit_status=status, reason=reason, log_cid=log_cid,
                 outputs=len(outputs), seconds=seconds)  # fmt: skip
        return result


def ensure_log(path: Path) -> int:
    """Open the log for the child's stdout/stderr (O_APPEND: both streams interleave)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
