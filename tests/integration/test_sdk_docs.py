"""docs/sdk.md runs: every ```python block of the page, in order, in one namespace,
against a real one-node colony whose home is in COLONY_HOME (as a reader would run it)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from colony_cluster import REPO, cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_every_example_of_docs_sdk_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall((REPO / "docs" / "sdk.md").read_text())
    assert len(blocks) >= 6
    with cluster(tmp_path, 1) as c:
        monkeypatch.setenv("COLONY_HOME", str(c.nodes[0].home))
        namespace: dict[str, object] = {"__name__": "docs_sdk"}
        for i, code in enumerate(blocks):
            try:
                exec(compile(code, f"docs/sdk.md block {i}", "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"docs/sdk.md block {i} failed: {e!r}\n{code}") from e
        # the capsule the page ran is counted in /metrics, by state and executor kind
        metrics = c.nodes[0].api().call("GET", "/metrics").decode()
        assert 'colony_capsules{executor="any",state="succeeded"} 1.0' in metrics, [
            line for line in metrics.splitlines() if "capsules" in line]
    assert os.environ["COLONY_HOME"]
