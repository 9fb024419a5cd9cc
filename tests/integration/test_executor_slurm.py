"""Slurm executor against a real slurmctld + slurmd (one node, no accounting).

The cluster starts once per test session (tests/integration/slurm_cluster.py). The
tests skip only when the Debian packages are not installed; a cluster that is
installed but does not come up is an error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import executor_helpers as h
import pytest
import slurm_cluster as sc
import trio

from overlay.capsule.spec import CapsuleSpec
from overlay.runtime.executors import (
    EXIT_CANCELLED,
    EXIT_TIMEOUT,
    KillSwitch,
    SlurmExecutor,
    available_kinds,
    executor_for,
    kind_of,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sc.SlurmCluster]:
    why = sc.missing_packages()
    if why is not None:
        pytest.skip(why)
    cluster = sc.start_cluster(tmp_path_factory.mktemp("slurm"))
    old = os.environ.get("SLURM_CONF")
    # The executor's Slurm commands find the private cluster through SLURM_CONF.
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop()


def executor() -> SlurmExecutor:
    return SlurmExecutor(poll_s=0.2, cancel_wait_s=20.0)


def scontrol_job(cluster: sc.SlurmCluster, reason: str) -> str:
    """`scontrol show job` of the job a result's reason names ("Slurm job 5 cancelled")."""
    m = re.search(r"Slurm job (\d+) cancelled", reason)
    assert m is not None, reason
    r = subprocess.run(["scontrol", "show", "-o", "job", m.group(1)],
                       env=cluster.env,
                       capture_output=True, text=True, timeout=15, check=True)  # fmt: skip
    return r.stdout


def test_slurm_is_detected_as_available(slurm: sc.SlurmCluster) -> None:
    assert trio.run(available_kinds) == ("subprocess", "function", "slurm")
    assert isinstance(executor_for("slurm"), SlurmExecutor)


def test_no_accounting_is_detected(slurm: sc.SlurmCluster) -> None:
    ex = executor()
    assert trio.run(ex.accounting) is False
    # A job id slurmctld never had: without sacct the executor can only say "gone".
    js = trio.run(ex.query, "987654")
    assert js is not None and js.state == ""


def test_job_runs_and_its_output_comes_back_as_a_cid(
    slurm: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLONY_DAEMON_SECRET", "hunter2")
    ctx = h.make_ctx(tmp_path)
    spec = CapsuleSpec.from_dict({
        "command": ["sh", "-c", 'echo "job $SLURM_JOB_ID on $(hostname)"; env > env.txt; '
                                'printf "computed on slurm" > result.txt'],
        "outputs": ["result.txt", "env.txt"], "env": {"ANSWER": "42"},
        "conditions": {"executor": "slurm", "cpu": 1, "mem_mib": 64},
    })  # fmt: skip
    assert kind_of(spec) == "slurm"
    res = h.run(executor(), spec, ctx, maxexectime_s=60)
    assert res.exit_status == 0, h.log_text(ctx, res)
    assert h.read_cid(ctx, res.outputs[0]) == b"computed on slurm"
    env = dict(ln.split("=", 1) for ln in h.read_cid(ctx, res.outputs[1]).decode().splitlines()
               if "=" in ln)  # fmt: skip
    assert env["ANSWER"] == "42" and env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert "SLURM_JOB_ID" in env and "COLONY_DAEMON_SECRET" not in env
    assert "MAIL" not in env and "USER" not in env  # nothing of a login environment
    assert env["COLONY_CAPSULE_ID"] == h.CAPSULE_ID
    assert "job " in h.log_text(ctx, res)


def test_failing_job_exit_code_maps(slurm: sc.SlurmCluster, tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    res = h.run(executor(), CapsuleSpec(command=("sh", "-c", "echo bad >&2; exit 7")), ctx)
    assert res.exit_status == 7 and res.reason == "exit status 7"
    assert "bad" in h.log_text(ctx, res)
    res = h.run(executor(), CapsuleSpec(command=("sh", "-c", "kill -9 $$")), ctx, token=2)
    assert res.exit_status == 128 + 9


def test_kill_scancels_the_job(slurm: sc.SlurmCluster, tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    marker = tmp_path / "started"
    spec = CapsuleSpec(command=("sh", "-c", 'echo up > "$MARKER"; exec sleep 1000'),
                       env=(("MARKER", str(marker)),))  # fmt: skip

    async def kill_when_running(kill: KillSwitch) -> None:
        await h.wait_for_file(marker, timeout_s=30)
        kill.kill("lease revoked")

    res = h.run(executor(), spec, ctx, during=kill_when_running)
    assert res.exit_status == EXIT_CANCELLED and "lease revoked" in res.reason
    line = scontrol_job(slurm, res.reason)
    assert "JobState=CANCELLED" in line and f"JobName=colony-{h.CAPSULE_ID[-12:]}" in line
    assert "CANCELLED" in h.log_text(ctx, res)  # slurmstepd's note in the job's log


def test_maxexectime_scancels_the_job(slurm: sc.SlurmCluster, tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    res = h.run(executor(), CapsuleSpec(command=("sleep", "1000")), ctx, maxexectime_s=2.0)
    assert res.exit_status == EXIT_TIMEOUT and "maxexectime 2s exceeded" in res.reason


def test_function_capsule_runs_under_slurm(slurm: sc.SlurmCluster, tmp_path: Path) -> None:
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "colony_slurm_fn.py").write_text("def square(x):\n    return x * x\n")
    ctx = h.make_ctx(tmp_path)
    spec = CapsuleSpec.from_dict({"function": "colony_slurm_fn:square", "args": [12],
                                  "env": {"PYTHONPATH": str(mods)},
                                  "conditions": {"executor": "slurm"}})  # fmt: skip
    res = h.run(executor(), spec, ctx)
    assert res.exit_status == 0, h.log_text(ctx, res)
    assert json.loads(h.read_cid(ctx, res.outputs[0])) == 144
