"""The capsule protocols under hostile input: each abuse costs the abuser only.

Two daemons run a capsule while a test-process attacker (its own key, not a member)
sends garbage and malformed frames on /colony/capsule/1.0.0, bogus requests on
/colony/capsule-info/1.0.0, malformed forwards and another key's capsule on
/colony/capsule-forward/1.0.0 (placement across cells: refused, counted), and a forged
receipt (signed by itself, claiming success with a made-up output) to every node. The
daemons keep running, the forged receipt is not accepted, and the capsule finishes
with its real executor's receipt.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from capsule_helpers import EventLog, submit, wait_done, wait_state
from colony_cluster import Cluster, wait_for

from overlay.capsule.messages import ReceiptMsg
from overlay.capsule.receipts import Receipt
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.net.transport import Codec, Transport, TransportConfig, TransportError
from overlay.runtime.services.capsule_info import PROTO_CAPSULE_INFO
from overlay.runtime.services.capsules import PROTO_CAPSULE
from overlay.runtime.services.cell_forward import PROTO_CAPSULE_FORWARD

pytestmark = pytest.mark.slow

FAKE_OUTPUT = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


async def _attack(targets: list[tuple[PeerId, str]], capsule_id: str, token: int
                  ) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"refused": 0, "answers": [], "forward": []}
    me = KeyPair.generate()
    forged = Receipt.sign(me, capsule_id, token, 0, (FAKE_OUTPUT,), "", 1.0, 2.0, "forged")
    async with Transport.open(me, ["/ip4/127.0.0.1/tcp/0"], TransportConfig()) as t:
        for peer, addr in targets:
            await t.connect(addr)
            # Well-formed, but forged: the attacker never held the lease.
            await t.send(peer, PROTO_CAPSULE, ReceiptMsg(forged).to_wire(), timeout=10)
            for body in (["c.submit", 1, 2, 3], ["c.nosuch"], {"a": 1}, [b"\x00" * 1000],
                         ["c.receipt", ["not", "an", "envelope"]], 12345):
                try:
                    await t.send(peer, PROTO_CAPSULE, body, timeout=10)
                except TransportError:
                    out["refused"] += 1
            for req in ({"op": "log", "id": capsule_id, "token": -1, "offset": 0},
                        {"op": "log", "id": "../../etc/passwd", "token": 1, "offset": 0},
                        {"op": "drop-tables", "id": capsule_id}, ["status"], None,
                        {"op": "find", "id": "not-a-capsule-id"}):
                try:
                    out["answers"].append(await t.request(peer, PROTO_CAPSULE_INFO, req,
                                                          timeout=10))  # fmt: skip
                except TransportError as e:
                    out["refused"] += 1
                    out["answers"].append(str(e))
            someone_else = Capsule.sign(KeyPair.generate(), CapsuleSpec.from_dict(
                {"command": ["true"]}), 1.0)
            for fwd in ({"capsule": 1}, None, ["x"], {"capsule": ["junk"]},
                        {"capsule": someone_else.to_wire()}):
                try:
                    out["forward"].append(await t.request(peer, PROTO_CAPSULE_FORWARD, fwd,
                                                          timeout=10))  # fmt: skip
                except TransportError as e:
                    out["refused"] += 1
                    out["forward"].append(str(e))
        t.codec_for(PROTO_CAPSULE, Codec.RAW)  # last: frames that are not CBOR at all
        for peer, addr in targets:
            await t.disconnect(peer)
            await t.connect(addr)
            for junk in (os.urandom(500), b"\xff" * 40):
                try:
                    await t.send(peer, PROTO_CAPSULE, junk, timeout=10)
                except TransportError:
                    out["refused"] += 1
    return out


def test_garbage_and_a_forged_receipt_cost_the_attacker_only(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", 2) as c:
        c.wait_converged(60)
        events = EventLog(c.nodes, ("ReceiptAccepted",))
        cid = submit(c.nodes[1], {"name": "honest", "maxexectime_s": 60,
                                  "command": ["sh", "-c", "sleep 3; echo real > r.txt"],
                                  "outputs": ["r.txt"]})  # fmt: skip
        row = wait_state(c.nodes[0], cid, ("running",), 30)
        targets = [(PeerId.from_base58(n.peer_id), n.addr) for n in c.nodes]
        report = trio.run(_attack, targets, cid, row["token"])
        assert any("refused" in str(a) for a in report["answers"]), report
        # Forwards: another key's capsule is answered "rejected", malformed ones refused.
        assert sum(1 for a in report["forward"] if isinstance(a, dict)
                   and a.get("state") == "rejected") == len(c.nodes), report["forward"]
        for n in c.nodes:
            st = n.api().call("GET", "/v1/capsules/stats")["cross_cell"]
            assert st.get("refused_malformed", 0) == 4 and st.get("refused", 0) == 1, st
        final = wait_done(c.nodes[0], cid, 60)
        assert final["state"] == "succeeded", final
        assert final["receipt_executor"] == row["executor"]
        assert FAKE_OUTPUT not in final["outputs"]
        wait_for(lambda: events.count("ReceiptAccepted")[cid] >= 1, 10, "ReceiptAccepted")
        assert events.count("ReceiptAccepted")[cid] == 1
        for n in c.nodes:
            assert n.proc is not None and n.proc.poll() is None, f"{n.home.name} died"
        # The leading custodian looked at the forged receipt and rejected it.
        rejected = sum(n.api().call("GET", "/v1/capsules/stats")["custody"]
                       .get("receipts_rejected", 0) for n in c.nodes)  # fmt: skip
        assert rejected >= 1
        # Still serving capsules afterwards.
        after = submit(c.nodes[0], {"command": ["true"]})
        assert wait_done(c.nodes[1], after, 30)["state"] == "succeeded"
        for n in c.nodes:
            n.kill(signal.SIGTERM)
