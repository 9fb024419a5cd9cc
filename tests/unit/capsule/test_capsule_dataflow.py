"""Workflow data flow helpers: output names, parent labels, wire validation."""

from __future__ import annotations

import pytest

from overlay.capsule.dataflow import (
    FUNCTION_RESULT,
    ParentOutput,
    named_outputs,
    output_names,
    parent_label,
)
from overlay.capsule.events import RunRequested
from overlay.capsule.leases import LeaseTiming
from overlay.capsule.messages import LeaseOffer, StatusReply, decode_bytes, encode_bytes
from overlay.capsule.spec import Capsule, CapsuleSpec, capsule_cid
from overlay.core.crypto import KeyPair
from overlay.core.errors import MalformedFrame

A, B, C = (capsule_cid(x) for x in (b"a", b"b", b"c"))
KEY = KeyPair(b"\x01" * 32)


def test_output_names_follow_the_executors_order() -> None:
    cmd = CapsuleSpec(command=("x",), outputs=("out.csv", "plots/"))
    fn = CapsuleSpec(function="f", outputs=("out.csv",))
    assert output_names(cmd) == ("out.csv", "plots/")
    assert output_names(fn) == (FUNCTION_RESULT, "out.csv")
    # More CIDs than names (another executor's convention): extras named by CID.
    assert named_outputs(cmd, (A, B, C)) == (("out.csv", A), ("plots/", B), (C, C))
    assert named_outputs(fn, ()) == ()


def test_parent_label_is_one_safe_path_component() -> None:
    assert parent_label(CapsuleSpec(name="clean", command=("x",)), A) == "clean"
    for bad in ("", "a/b", "..", "."):
        assert parent_label(CapsuleSpec(name=bad, command=("x",)), A) == A


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs", "a/../../b", ""])
def test_parent_outputs_that_escape_the_inputs_dir_are_refused(name: str) -> None:
    with pytest.raises(MalformedFrame):
        ParentOutput.from_wire([A, "p", name, B])
    with pytest.raises(MalformedFrame):
        StatusReply.from_wire(["c.status", A, "succeeded", 1, "", [B], 0, [name], ""])


def test_offer_and_run_carry_parent_outputs() -> None:
    cap = Capsule.sign(KEY, CapsuleSpec(command=("x",), inputs=(A,), dependencies=(B,)), 0.0)
    outs = (ParentOutput(B, "clean", "data/out.csv", C), ParentOutput(B, "clean", "x", A))
    offer = LeaseOffer(cap, 2, LeaseTiming(), outs)
    again = decode_bytes(encode_bytes(offer))
    assert again == offer
    run = RunRequested(cap, 2, 0.0, outs)
    assert run.input_cids == (A, C)  # the spec's own first, each CID once
    assert [o.path for o in run.parent_outputs] == ["clean/data/out.csv", "clean/x"]


def test_status_reply_names_must_match_outputs() -> None:
    ok = StatusReply(A, "succeeded", 1, "", (B, C), 0, ("x", "y"), "step")
    assert decode_bytes(encode_bytes(ok)) == ok
    with pytest.raises(MalformedFrame):
        StatusReply.from_wire(["c.status", A, "succeeded", 1, "", [B, C], 0, ["x"], ""])
    with pytest.raises(MalformedFrame):
        StatusReply.from_wire(["c.status", A, "succeeded", 1, "", [B], 0, ["x"], "a/b"])


def test_too_many_parent_outputs_fail_the_child_with_a_reason() -> None:
    from overlay.capsule import events as ev
    from overlay.capsule.core import CapsuleCore, SubmitCapsule
    from overlay.capsule.dataflow import MAX_PARENT_OUTPUTS
    from overlay.core.effects import Emit, Received

    core = CapsuleCore(KEY.peer_id, KEY)
    child = Capsule.sign(KEY, CapsuleSpec(command=("x",), dependencies=(A, B)), 0.0)
    core.handle(SubmitCapsule(child), 0.0)
    n = MAX_PARENT_OUTPUTS // 2 + 1
    cids = tuple(capsule_cid(i.to_bytes(4, "big")) for i in range(n))
    out = []
    for parent in (A, B):
        reply = StatusReply(parent, "succeeded", 1, "", cids, 0, tuple(f"o{i}" for i in range(n)))
        out += core.handle(Received(KEY.peer_id, reply), 1.0)
    done = [e.event for e in out if isinstance(e, Emit) and isinstance(e.event, ev.CapsuleFinished)]
    assert done and done[0].state == "failed"
    assert done[0].reason == (f"dependencies produced {2 * n} outputs; at most "
                              f"{MAX_PARENT_OUTPUTS} can feed one capsule")  # fmt: skip
