"""A capsule with executor kind slurm runs through a real slurmctld.

Two daemons; both find the private one-node Slurm cluster (slurm_cluster.py) through
SLURM_CONF, so both detect and advertise the slurm executor kind. The capsule is
submitted through the daemon API, placed by custody, run by `sbatch` on the executor
node, and its output comes back as a CID that the other node fetches and reads.
Skips only when the Slurm packages are not installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import slurm_cluster as sc
from capsule_helpers import submit, wait_done
from colony_cluster import Cluster, colony_cmd

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sc.SlurmCluster]:
    why = sc.missing_packages()
    if why is not None:
        pytest.skip(why)
    cluster = sc.start_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


def test_slurm_capsule_output_comes_back_as_a_cid(slurm: sc.SlurmCluster, tmp_path: Path) -> None:
    env = {"SLURM_CONF": str(slurm.conf)}
    with Cluster(tmp_path / "c", 2, env=env) as c:
        c.wait_converged(60)
        ads = {r["id"]: r["ad"] for r in c.nodes[0].members()}
        assert all("slurm" in ad["executors"] for ad in ads.values()), ads
        spec = {"name": "batch", "command": ["sh", "-c", "echo from-slurm $SLURM_JOB_ID > o.txt"],
                "outputs": ["o.txt"], "conditions": {"executor": "slurm"},
                "maxexectime_s": 120}  # fmt: skip
        cid = submit(c.nodes[1], spec)
        final = wait_done(c.nodes[1], cid, 90)
        assert final["state"] == "succeeded", final
        out = final["outputs"][0]
        colony_cmd(c.nodes[0].home, "fetch", out)
        text = colony_cmd(c.nodes[0].home, "cat", out).stdout
        job_id = text.split()[1]
        assert text.startswith("from-slurm ") and job_id.isdigit(), text
        got = json.loads(colony_cmd(c.nodes[0].home, "capsule", "get", cid, "--json").stdout)
        assert got["exit_status"] == 0 and got["log_cid"]
