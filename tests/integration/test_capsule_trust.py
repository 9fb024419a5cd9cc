"""Capsules in a colony with certificates (colony mode, docs/trust.md): roles decide.

Three daemons: n0 founds the colony (every role); n1 is certified `member,execute`
(may run capsules, may not submit); n2 `member,submit` (may submit, may not run). Then:

- a capsule submitted through n1 is refused by custody, and the CLI says why
  ("role submit not granted …");
- capsules submitted through n2 run, but never on n2 (placement only offers leases to
  members whose certificate grants `execute`);
- a node outside the colony is refused on the capsule protocols ("not a member");
- the daemon reads its colony owner and chain through capsule_service.load_authority
  (overlay/runtime/services/trust_state.py's capsule_authority), not from any capsule-specific file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from capsule_helpers import submit, wait_done
from colony_cluster import Cluster, cli, colony_cmd

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.net.transport import Transport, TransportConfig, TransportError
from overlay.runtime.services.capsule_info import PROTO_CAPSULE_INFO

pytestmark = pytest.mark.slow


def test_roles_decide_who_submits_and_who_executes(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "c", 3)
    try:
        c.prepare()
        n0, n1, n2 = c.nodes
        cli(n0.home, "colony", "create", "lab")
        for node, roles in ((n1, "member,execute"), (n2, "member,submit")):
            tok = node.home.parent / f"{node.home.name}.token"
            cli(n0.home, "cert", "issue", node.peer_id, "--roles", roles,
                "--bootstrap", n0.addr, "--out", str(tok))  # fmt: skip
            cli(node.home, "join", str(tok))
        c.launch()
        c.wait_converged(timeout=60)

        spec = tmp_path / "job.toml"
        spec.write_text('command = ["sh", "-c", "echo ran > r.txt"]\noutputs = ["r.txt"]\n')
        r = colony_cmd(n1.home, "capsule", "submit", str(spec), check=False)
        assert r.returncode == 1, r.stdout
        assert "rejected" in r.stderr and "role submit not granted" in r.stderr, r.stderr
        print(r.stderr.strip())

        executors = set()
        for i in range(6):
            cid = submit(n2, {"name": f"j{i}", "command": ["sh", "-c", "echo ran > r.txt"],
                              "outputs": ["r.txt"]})  # fmt: skip
            final = wait_done(n2, cid, 60)
            assert final["state"] == "succeeded", final
            executors.add(final["executor"])
        assert n2.peer_id not in executors, "a member without execute ran a capsule"
        assert executors <= {n0.peer_id, n1.peer_id}

        # A node outside the colony cannot even read capsule state.
        async def outsider() -> str:
            async with Transport.open(KeyPair.generate(), ["/ip4/127.0.0.1/tcp/0"],
                                      TransportConfig()) as t:  # fmt: skip
                await t.connect(n0.addr)
                try:
                    await t.request(PeerId.from_base58(n0.peer_id), PROTO_CAPSULE_INFO,
                                    {"op": "status", "id": cid}, timeout=10)  # fmt: skip
                except TransportError as e:
                    return str(e)
                return "answered"

        assert "not a member of this colony" in trio.run(outsider)
    finally:
        c.close()
