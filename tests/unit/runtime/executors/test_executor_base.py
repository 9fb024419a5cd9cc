"""Executor contract pieces: output path safety, rlimits, status text, registry."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
import trio

from overlay.capsule.spec import CapsuleSpec, Conditions
from overlay.runtime.executors import (
    EXIT_SETUP_FAILED,
    ExecContext,
    ExecLimits,
    ExecRequest,
    ExecResult,
    FunctionExecutor,
    InputMissing,
    SlurmExecutor,
    SubprocessExecutor,
    UnknownExecutor,
    available_kinds,
    executor_for,
    kind_of,
)
from overlay.runtime.executors.base import ExecutorError, Job, describe_status, output_path
from overlay.runtime.executors.subprocess import rlimits_for
from store.blockstore import BlockStore


def test_output_paths_stay_inside_the_work_dir(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "d").mkdir(parents=True)
    assert output_path(work, "d/x.txt") == work / "d" / "x.txt"
    for bad in ("", "/etc/passwd", "../x", "d/../../x"):
        with pytest.raises(ExecutorError):
            output_path(work, bad)
    (work / "link").symlink_to(tmp_path)
    with pytest.raises(ExecutorError, match="outside the work dir"):
        output_path(work, "link")
    (work / "inner").symlink_to(work / "d")
    assert output_path(work, "inner") == work / "inner"


def _job(tmp_path: Path, spec: CapsuleSpec, maxexec: float, limits: ExecLimits) -> Job:
    ctx = ExecContext(store=BlockStore(tmp_path / "blocks"), workdir_root=tmp_path, limits=limits)
    return Job(ExecRequest("bafkreiabc", 1, spec, maxexec), ctx, tmp_path, tmp_path / "w",
               tmp_path / "log", float("inf"))  # fmt: skip


def test_rlimits_follow_conditions_and_maxexectime(tmp_path: Path) -> None:
    spec = CapsuleSpec(command=("x",), conditions=Conditions(cpu=2, mem_mib=256))
    lim = dict((r, (s, hd)) for r, s, hd in
               rlimits_for(_job(tmp_path, spec, 10, ExecLimits(cpu_slack_s=5))))  # fmt: skip
    assert lim[resource.RLIMIT_AS] == (256 << 20, 256 << 20)
    assert lim[resource.RLIMIT_CPU] == (25, 27)  # 10 s × 2 cores + 5 s slack
    assert lim[resource.RLIMIT_CORE] == (0, 0)
    assert lim[resource.RLIMIT_NOFILE][0] <= 1024
    lim2 = {r for r, _, _ in rlimits_for(_job(tmp_path, CapsuleSpec(command=("x",)), 0,
                                                ExecLimits()))}  # fmt: skip
    assert resource.RLIMIT_AS not in lim2 and resource.RLIMIT_CPU not in lim2


def test_rlimits_never_exceed_the_daemons_hard_limit(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spec = CapsuleSpec(command=("x",))
    lim = {r: (s, hd) for r, s, hd in rlimits_for(
        _job(tmp_path, spec, 0, ExecLimits(max_open_files=10**9)))}  # fmt: skip
    soft, h = lim[resource.RLIMIT_NOFILE]
    assert soft <= h and (hard == resource.RLIM_INFINITY or h <= hard)


def test_rlimits_of_an_enormous_maxexectime_fit_setrlimit(tmp_path: Path) -> None:
    """2^63 s × 2^20 cores used to overflow setrlimit in the child's preexec_fn."""
    spec = CapsuleSpec(command=("x",), conditions=Conditions(cpu=2**20))
    for res, soft, hard in rlimits_for(_job(tmp_path, spec, 2.0**63, ExecLimits())):
        assert -1 <= soft <= hard < 2**63 or hard == resource.RLIM_INFINITY, (res, soft, hard)


def test_status_text() -> None:
    assert describe_status(137) == "killed by SIGKILL"
    assert describe_status(143) == "killed by SIGTERM"
    assert describe_status(3) == "exit status 3"


def test_registry_and_kinds() -> None:
    assert isinstance(executor_for("subprocess"), SubprocessExecutor)
    assert isinstance(executor_for("function"), FunctionExecutor)
    assert isinstance(executor_for("slurm"), SlurmExecutor)
    with pytest.raises(UnknownExecutor, match="docker"):
        executor_for("docker")
    assert kind_of(CapsuleSpec(command=("x",))) == "subprocess"
    assert kind_of(CapsuleSpec(function="m:f")) == "function"
    assert kind_of(CapsuleSpec(command=("x",), conditions=Conditions(executor="slurm"))) == "slurm"


def test_setup_failed_result_and_exited_command() -> None:
    req = ExecRequest("bafkreiabc", 4, CapsuleSpec(command=("x",)), 0)
    res = ExecResult.setup_failed(req, "inputs unobtainable")
    ex = res.to_exited()
    assert (ex.capsule_id, ex.token, ex.exit_status, ex.reason) == (
        "bafkreiabc", 4, EXIT_SETUP_FAILED, "inputs unobtainable")  # fmt: skip
    assert "block bafkreixyz" in str(InputMissing("bafyroot", "bafkreixyz"))


def test_slurm_not_advertised_without_a_reachable_controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sbatch may be installed, but a missing config (scontrol retries for a minute)
    or a dead controller must not make the node advertise slurm."""
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "absent" / "slurm.conf"))
    assert trio.run(available_kinds, 1.0) == ("subprocess", "function")
