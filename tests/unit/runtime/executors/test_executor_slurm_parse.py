"""Slurm executor's pure parts: scontrol/sacct parsing, state mapping, batch script."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from overlay.capsule.spec import CapsuleSpec, Conditions
from overlay.runtime.executors import (
    EXIT_CANCELLED,
    EXIT_LOST,
    EXIT_SETUP_FAILED,
    EXIT_TIMEOUT,
    ExecContext,
    ExecRequest,
)
from overlay.runtime.executors.base import Job
from overlay.runtime.executors.slurm import (
    JobState,
    batch_script,
    map_state,
    parse_sacct,
    parse_scontrol,
)
from store.blockstore import BlockStore

# Captured from slurm-wlm 22.05 (`scontrol show -o job 1`), shortened.
SCONTROL_FAILED = (
    "JobId=1 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 "
    "Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode "
    "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 "
    "RunTime=00:00:01 TimeLimit=UNLIMITED NodeList=vm BatchHost=vm NumNodes=1"
)


def test_parse_scontrol_line() -> None:
    assert parse_scontrol(SCONTROL_FAILED) == JobState("FAILED", 3, 0, "NonZeroExitCode")
    running = SCONTROL_FAILED.replace("JobState=FAILED", "JobState=RUNNING").replace(
        "ExitCode=3:0", "ExitCode=0:0")  # fmt: skip
    assert parse_scontrol(running) == JobState("RUNNING", 0, 0, "NonZeroExitCode")
    assert parse_scontrol("JobState=CANCELLED+ ExitCode=0:15") == JobState("CANCELLED", 0, 15, "")
    assert parse_scontrol("slurm_load_jobs error: Invalid job id specified") is None


def test_parse_sacct_lines() -> None:
    assert parse_sacct("CANCELLED by 0|0:15\n") == JobState("CANCELLED", 0, 15, "")
    assert parse_sacct("COMPLETED|0:0\n") == JobState("COMPLETED", 0, 0, "")
    assert parse_sacct("") is None


@pytest.mark.parametrize(
    ("state", "code", "sig", "status"),
    [
        ("COMPLETED", 0, 0, 0),
        ("FAILED", 7, 0, 7),
        ("FAILED", 0, 9, 137),  # killed by a signal: 128 + n
        ("FAILED", 0, 0, EXIT_SETUP_FAILED),  # Slurm could not start the script
        ("TIMEOUT", 0, 15, EXIT_TIMEOUT),
        ("CANCELLED", 0, 15, EXIT_CANCELLED),
        ("OUT_OF_MEMORY", 0, 0, 137),
        ("NODE_FAIL", 0, 0, EXIT_LOST),
        ("PREEMPTED", 0, 0, EXIT_LOST),
    ],
)
def test_state_mapping(state: str, code: int, sig: int, status: int) -> None:
    got, reason = map_state(JobState(state, code, sig, ""))
    assert got == status
    assert (reason == "") == (status == 0)


def _job(tmp_path: Path, spec: CapsuleSpec, maxexec: float) -> Job:
    ctx = ExecContext(store=BlockStore(tmp_path / "blocks"), workdir_root=tmp_path / "runs")
    rundir = tmp_path / "runs" / "x.1"
    (rundir / "work").mkdir(parents=True)
    return Job(ExecRequest("bafkreiabcdefghijklmnop", 1, spec, maxexec), ctx, rundir,
               rundir / "work", rundir / "log", float("inf"))  # fmt: skip


def test_batch_script_options(tmp_path: Path) -> None:
    spec = CapsuleSpec(command=("echo", "it's a test"), conditions=Conditions(cpu=1.5, mem_mib=300))
    job = _job(tmp_path, spec, 61)
    text = batch_script(job, spec.command, job.base_env())
    assert text.startswith("#!/bin/sh\n")
    for opt in (
        f"--chdir={job.work}",
        f"--output={job.log_path}",
        "--time=3",
        "--cpus-per-task=2",
        "--mem=300M",
        "--no-requeue",
        "--open-mode=append",
    ):
        assert f"#SBATCH {opt}\n" in text
    assert text.rstrip().endswith("exec echo 'it'\"'\"'s a test'")
    assert "--time" not in batch_script(_job(tmp_path / "b", spec, 0), spec.command, {})


def test_batch_script_scrubs_the_environment_and_exports_the_capsule_env(
    tmp_path: Path,
) -> None:
    """Run the generated script with sh (as slurmd would) under a polluted env."""
    spec = CapsuleSpec(command=("env",), env=(("ANSWER", "forty two"), ("MULTI", "a\nB=c")))
    job = _job(tmp_path, spec, 0)
    script = tmp_path / "job.sh"
    script.write_text(batch_script(job, spec.command, job.base_env()))
    polluted = {**os.environ, "DAEMON_SECRET": "x", "SLURM_JOB_ID": "17", "MAIL": "/var/mail"}
    out = subprocess.run(["sh", str(script)], env=polluted, capture_output=True, text=True,
                         timeout=30, check=True, cwd=job.work).stdout  # fmt: skip
    names = {ln.split("=", 1)[0] for ln in out.splitlines() if "=" in ln}
    assert "DAEMON_SECRET" not in names and "MAIL" not in names
    assert "SLURM_JOB_ID=17" in out and "ANSWER=forty two" in out
    assert {n for n in names if not n.startswith(("SLURM_", "COLONY_"))} <= {
        "PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "ANSWER", "MULTI", "B", "PWD", "OLDPWD",
    }  # fmt: skip
