"""Capsule specs (our form and ColonyOS function specs), signing, ids, workflows."""

from __future__ import annotations

import pytest

from overlay.capsule.spec import (
    Capsule,
    CapsuleSpec,
    Conditions,
    SpecError,
    capsule_key,
    check_cid,
    cid_multihash,
)
from overlay.capsule.workflow_spec import Workflow
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import BadSignature, MalformedFrame
from overlay.core.ids import key_of_bytes

KP = KeyPair(b"\x07" * 32)
CID0 = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
CID1 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"

COLONYOS = {
    "nodename": "train",
    "funcname": "train_model",
    "args": ["--epochs", 3],
    "kwargs": {"lr": 0.01, "name": "x"},
    "priority": 5,
    "maxwaittime": -1,
    "maxexectime": 600,
    "maxretries": 2,
    "env": {"MODE": "fast"},
    "label": "ignored-when-nodename-set",
    "conditions": {
        "colonyname": "dev",
        "executortype": "slurm",
        "nodes": 1,
        "cpu": "500m",
        "mem": "2Gi",
        "processes": 1,
        "walltime": 60,
        "gpu": {"name": "a100", "count": 1},
    },
}


def test_colonyos_function_spec_is_mapped() -> None:
    s = CapsuleSpec.from_dict(COLONYOS)
    assert s.name == "train" and s.function == "train_model" and s.command == ()
    assert s.args == ("--epochs", 3) and s.kwargs == (("lr", 0.01), ("name", "x"))
    assert s.maxwaittime_s == 0.0 and s.maxexectime_s == 600.0 and s.maxretries == 2
    assert s.conditions == Conditions(cpu=0.5, mem_mib=2048, gpu=1, executor="slurm")
    assert s.env == (("MODE", "fast"),) and s.priority == 5


def test_native_form_with_cids_and_labels() -> None:
    s = CapsuleSpec.from_dict({
        "command": ["python", "run.py"],
        "inputs": [CID0, CID1],
        "outputs": ["out/result.csv"],
        "conditions": {"cpu": 2, "mem_mib": 512, "labels": {"site": "cern"}, "location": "ch"},
        "maxwaittime_s": 30,
        "dependencies": [],
    })  # fmt: skip
    assert s.inputs == (CID0, CID1) and s.conditions.labels == (("site", "cern"),)
    assert s.conditions.describe() == "cpu≥2 and mem≥512 MiB and label site=cern and location ch"


@pytest.mark.parametrize(
    ("d", "msg"),
    [
        ({"command": ["x"], "colour": 1}, "unknown field colour"),
        ({"command": ["x"], "conditions": {"storage": 1}}, "unknown field conditions.storage"),
        ({"funcname": "f", "conditions": {"gpu": {"count": 1, "vendor": "x"}}},
         "unknown field conditions.gpu.vendor"),
        ({"command": ["x"], "function": "f"}, "exactly one of command or function"),
        ({}, "exactly one of command or function"),
        ({"command": ["x"], "inputs": ["not-a-cid"]}, "inputs"),
        ({"command": ["x"], "conditions": {"mem": "lots"}}, "memory quantity"),
        ({"command": ["x"], "conditions": {"cpu": "2x"}}, "CPU quantity"),
        ({"command": ["x"], "conditions": {"nodes": 4}}, "multi-node"),
        ({"command": ["x"], "maxretries": -1}, "maxretries"),
        ({"command": ["x"], "maxwaittime": -5}, "maxwaittime"),
        ({"command": ["x"], "maxexectime": 2**63}, "maxexectime must be at most"),
        ({"command": ["x"], "maxwaittime_s": 1e300}, "maxwaittime must be at most"),
        ({"command": ["x"], "fs": {}, "maxretries": 1}, None),
        ({"command": ["x"], "fs": {"dirs": [1]}}, "fs: ColonyOS file sync"),
        ({"command": ["x"], "args": [{"nested": 1}]}, "args"),
    ],
)  # fmt: skip
def test_bad_specs_name_the_problem(d: dict[str, object], msg: str | None) -> None:
    if msg is None:
        CapsuleSpec.from_dict(d)
        return
    with pytest.raises(SpecError, match=msg):
        CapsuleSpec.from_dict(d)


def test_wire_form_refuses_absurd_deadlines() -> None:
    wire = CapsuleSpec.from_dict({"command": ["x"], "maxexectime": 60}).to_wire()
    assert CapsuleSpec.from_wire(wire).maxexectime_s == 60
    for bad in (2**63, 1e300):
        with pytest.raises(MalformedFrame, match="exec must be at most"):
            CapsuleSpec.from_wire({**wire, "exec": bad})


def test_capsule_id_is_cidv1_raw_of_signed_bytes_and_key_follows() -> None:
    spec = CapsuleSpec.from_dict({"command": ["echo", "hi"]})
    cap = Capsule.sign(KP, spec, 100.0)
    assert cap.id.startswith("bafkrei")  # CIDv1, raw (0x55), sha2-256, base32
    assert cap.key == key_of_bytes(cid_multihash(cap.id)) == capsule_key(cap.id)
    again = Capsule.sign(KP, spec, 100.0)
    assert again.id == cap.id  # deterministic: a replay has the same id
    assert Capsule.sign(KP, spec, 100.0, nonce=1).id != cap.id
    assert Capsule.from_wire(cap.to_wire()) == cap
    assert cap.submitter == KP.peer_id


def test_capsule_with_forged_signature_is_rejected() -> None:
    cap = Capsule.sign(KP, CapsuleSpec(command=("x",)), 1.0)
    env = cap.envelope
    with pytest.raises(BadSignature):
        Capsule.from_envelope(Envelope(env.kind, env.body, env.signer, bytes(64)))
    wrong_kind = KP.seal("receipt", {"spec": {}, "at": 1, "nonce": 0})
    with pytest.raises(BadSignature):
        Capsule.from_envelope(wrong_kind)


def test_spec_wire_round_trip_and_strictness() -> None:
    s = CapsuleSpec.from_dict(COLONYOS)
    assert CapsuleSpec.from_wire(s.to_wire()) == s
    w = s.to_wire()
    w["extra"] = 1
    with pytest.raises(MalformedFrame):
        CapsuleSpec.from_wire(w)
    w = s.to_wire()
    w["deps"] = ["Qm-not-an-id"]
    with pytest.raises(MalformedFrame):
        CapsuleSpec.from_wire(w)


def test_cid_syntax_is_loose_but_real() -> None:
    assert check_cid(CID0) == CID0 and check_cid(CID1) == CID1
    for bad in ("", "Qm123", "zabc", "B" + CID1[1:], 5):
        with pytest.raises(SpecError):
            check_cid(bad)


def test_workflow_orders_parents_first_and_rewrites_dependencies_to_ids() -> None:
    wf = Workflow.from_dict({
        "name": "w",
        "capsules": [
            {"name": "c", "command": ["c"], "dependencies": ["a", "b"]},
            {"name": "a", "command": ["a"]},
            {"name": "b", "command": ["b"], "dependencies": ["a"]},
        ],
    })  # fmt: skip
    assert [s.name for s in wf.order()] == ["a", "b", "c"]
    caps = wf.sign(KP, 5.0)
    ids = {c.spec.name: c.id for c in caps}
    assert caps[2].spec.dependencies == (ids["a"], ids["b"])
    assert caps[1].spec.dependencies == (ids["a"],)


def test_workflow_cycle_is_named() -> None:
    with pytest.raises(SpecError, match="dependency cycle: b → d → c → b"):
        Workflow.from_dict([
            {"name": "a", "command": ["a"]},
            {"name": "b", "command": ["b"], "dependencies": ["a", "d"]},
            {"name": "c", "command": ["c"], "dependencies": ["b"]},
            {"name": "d", "command": ["d"], "dependencies": ["c"]},
        ])  # fmt: skip
    with pytest.raises(SpecError, match="dependency cycle: s → s"):
        Workflow.from_dict([{"name": "s", "command": ["s"], "dependencies": ["s"]}])


def test_workflow_structure_errors() -> None:
    with pytest.raises(SpecError, match="unknown capsule 'zz'"):
        Workflow.from_dict([{"name": "a", "command": ["a"], "dependencies": ["zz"]}])
    with pytest.raises(SpecError, match="two capsules are named 'a'"):
        Workflow.from_dict([{"name": "a", "command": ["a"]}, {"name": "a", "command": ["b"]}])
    with pytest.raises(SpecError, match="needs a name"):
        Workflow.from_dict([{"command": ["a"]}])
    with pytest.raises(SpecError, match=r"capsules\[1\]: unknown field bogus"):
        Workflow.from_dict([{"name": "a", "command": ["a"]}, {"name": "b", "bogus": 1}])


def test_colonyos_workflow_dependencies_in_conditions() -> None:
    wf = Workflow.from_dict([
        {"nodename": "gen", "funcname": "gen"},
        {"nodename": "sum", "funcname": "sum", "conditions": {"dependencies": ["gen"]}},
    ])  # fmt: skip
    assert [s.name for s in wf.order()] == ["gen", "sum"]
    assert wf.specs[1].dependencies == ("gen",)
