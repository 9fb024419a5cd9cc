"""Capsule specs, signed capsules and workflows (DESIGN §7; ColonyOS function specs).

A `CapsuleSpec` says *what* to run and *where it may run*: a command (argv) or a
function name with args/kwargs, env, input CIDs, output paths, `Conditions`, priority
and the ColonyOS deadlines (`maxwaittime_s`: how long it may wait for an executor;
`maxexectime_s`: how long one attempt may run; `maxretries`: how many leases may
expire before it fails) and dependencies (capsule ids).

`CapsuleSpec.from_dict` accepts our TOML/JSON form and ColonyOS function-spec JSON
(``funcname``, ``args``, ``kwargs``, ``conditions.{executortype,nodes,cpu,mem,gpu.count}``,
``maxwaittime``, ``maxexectime``, ``maxretries``, ``nodename``, ``label``); any other
field raises `SpecError` naming it ("unknown field conditions.storage").

A `Capsule` is a spec signed by its submitter (Envelope kind ``capsule``; body =
{spec, submitted_at, nonce}); its id is the CIDv1 (raw codec 0x55, sha2-256) of the
envelope's canonical bytes in base32 (``b…``). Ed25519 signatures are deterministic,
so re-sending the same signed capsule yields the same id and custody deduplicates it;
`nonce` lets a user submit the same spec twice on purpose.

A `Workflow` is named specs with dependencies by name; `Workflow.order()` checks it is
a DAG (naming the cycle: "a → b → a") and `Workflow.sign()` turns names into the
capsule ids of already-signed parents, in topological order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from overlay.capsule.sync_spec import MAX_SYNC, SyncDirective, parse_sync
from overlay.capsule.trigger_def import (
    TRIGGER_FUNCTION,
    Origin,
    TriggerDef,
    TriggerError,
    parse_origin,
)
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import InvalidCid, LocalProtocolError, MalformedFrame
from overlay.core.ids import PeerId, key_of_bytes
from overlay.core.multiformats import (
    b32decode_lower,
    b32encode_lower,
    b58decode,
    decode_varint,
    multihash_sha256,
    split_multihash,
)
from overlay.core.validate import finite, integer, number, string, strings
from overlay.core.wire import cbor_encode

CAPSULE_KIND = "capsule"
DERIVED_KIND = "colony/derived"
RAW_CODEC = 0x55
MAX_ITEMS = 256
MAX_STR = 4096
MAX_NAME = 128
MAX_DEPENDENCIES = 64
MAX_WORKFLOW = 1024
#: Longest maxwaittime / maxexectime a spec may ask for (100 years, in seconds).
MAX_DEADLINE_S = 100 * 365 * 86400
_U31 = 1 << 31


class SpecError(ValueError, LocalProtocolError):
    """A capsule spec or workflow that the user wrote is not valid."""


# ---------------------------------------------------------------- CIDs


_B58_RE = re.compile(r"^Qm[1-9A-HJ-NP-Za-km-z]{44}$")
_B32_RE = re.compile(r"^b[a-z2-7]{8,}$")


def check_cid(text: Any, what: str = "cid") -> str:
    """Loose syntax check: CIDv0 base58 ``Qm…`` (46 chars) or multibase base32 ``b…``."""
    if not isinstance(text, str) or not (_B58_RE.match(text) or _B32_RE.match(text)):
        raise SpecError(f"{what}: {text!r} is not a CID (Qm… or b…)")
    return text


def capsule_cid(data: bytes) -> str:
    """CIDv1, raw codec, sha2-256 of `data`, multibase base32 (``b…``)."""
    return "b" + b32encode_lower(b"\x01\x55" + multihash_sha256(data))


def cid_multihash(cid: str) -> bytes:
    """The multihash inside a CID string (v0 ``Qm…`` or v1 base32 ``b…``)."""
    try:
        if cid.startswith("Qm"):
            mh = b58decode(cid)
        elif cid.startswith("b"):
            raw = b32decode_lower(cid[1:])
            version, i = decode_varint(raw)
            if version != 1:
                raise InvalidCid(f"CID version {version} in {cid!r}")
            _codec, j = decode_varint(raw, i)
            mh = raw[j:]
        else:
            raise InvalidCid(f"unsupported multibase in {cid!r}")
        split_multihash(mh)
    except MalformedFrame as e:
        raise InvalidCid(f"{cid!r}: {e}") from None
    return mh


def capsule_key(capsule_id: str) -> int:
    """DHT key of a capsule: sha256 of its id's multihash (DESIGN §3)."""
    return key_of_bytes(cid_multihash(capsule_id))


def check_capsule_id(text: Any, what: str = "capsule id") -> str:
    if not isinstance(text, str) or not text.startswith("b") or len(text) > 128:
        raise MalformedFrame(f"{what} must be a base32 CIDv1 string")
    try:
        cid_multihash(text)
    except InvalidCid as e:
        raise MalformedFrame(f"{what}: {e}") from None
    return text


# ---------------------------------------------------------------- field helpers


# The shared validators (overlay/core/validate.py) with the spec's error and limits.


def _str(v: Any, what: str, limit: int = MAX_STR) -> str:
    return string(v, what, limit=limit, error=SpecError)


def _num(v: Any, what: str) -> float:
    return number(v, what, error=SpecError)


def _int(v: Any, what: str, lo: int = 0, hi: int = _U31) -> int:
    return integer(v, what, lo, hi, error=SpecError)


def _strs(v: Any, what: str) -> tuple[str, ...]:
    return strings(v, what, max_items=MAX_ITEMS, limit=MAX_STR, error=SpecError)


def _pairs(v: Any, what: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, Mapping) or len(v) > MAX_ITEMS:
        raise SpecError(f"{what} must be a table of at most {MAX_ITEMS} strings")
    return tuple(sorted((_str(k, f"{what} key"), _str(x, f"{what}.{k}")) for k, x in v.items()))


Scalar = str | int | float | bool | None


def _scalar(v: Any, what: str) -> Scalar:
    if v is None or isinstance(v, (str, bool, int)):
        if isinstance(v, str) and len(v) > MAX_STR:
            raise SpecError(f"{what} longer than {MAX_STR} characters")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 1 << 63:
            raise SpecError(f"{what} integer out of range")
        return v  # type: ignore[no-any-return,unused-ignore]
    if isinstance(v, float) and math.isfinite(v):
        return v
    raise SpecError(f"{what} must be a string, number, bool or null")


_QTY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$")
_MEM_UNITS = {
    "": 1 / (1 << 20),
    "k": 1e3 / (1 << 20),
    "m": 1e6 / (1 << 20),
    "g": 1e9 / (1 << 20),
    "t": 1e12 / (1 << 20),
    "ki": 1 / 1024,
    "mi": 1.0,
    "gi": 1024.0,
    "ti": 1024.0 * 1024,
}


def _sync(v: Any) -> tuple[SyncDirective, ...]:
    try:
        return parse_sync(v)
    except ValueError as e:
        raise SpecError(str(e)) from None


def _sync_wire(v: Any) -> tuple[SyncDirective, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not v or len(v) > MAX_SYNC:
        raise SpecError(f"sync must hold 1..{MAX_SYNC} directives")
    try:
        return tuple(SyncDirective.from_wire(x) for x in v)
    except ValueError as e:
        raise SpecError(str(e)) from None


def parse_mem_mib(v: Any, what: str) -> int:
    """Kubernetes/ColonyOS memory quantities ("512Mi", "1Gi", "2G"); numbers are MiB."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _int(round(_num(v, what)), what)
    m = _QTY.match(v) if isinstance(v, str) else None
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _MEM_UNITS:
        raise SpecError(f"{what}: {v!r} is not a memory quantity like 512Mi or 2Gi")
    return _int(math.ceil(float(m.group(1)) * _MEM_UNITS[unit]), what)


def parse_cpu(v: Any, what: str) -> float:
    """Cores as a number, or a Kubernetes quantity ("500m" = half a core)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _num(v, what)
    m = _QTY.match(v) if isinstance(v, str) else None
    if m is None or m.group(2) not in ("", "m"):
        raise SpecError(f"{what}: {v!r} is not a CPU quantity like 2 or 500m")
    n = float(m.group(1))
    return n / 1000.0 if m.group(2) == "m" else n


def _reject_unknown(d: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for k in d:
        if k not in known:
            raise SpecError(f"unknown field {where}{k}")


# ---------------------------------------------------------------- conditions


@dataclass(frozen=True, slots=True)
class Conditions:
    """Where a capsule may run. Zero / empty means "no requirement"."""

    cpu: float = 0.0
    mem_mib: int = 0
    gpu: int = 0
    executor: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    location: str = ""

    _KNOWN = (
        "cpu", "mem_mib", "mem", "gpu", "executor", "executortype", "labels", "location",
        "nodes", "colonyname", "processes", "processes_per_node", "walltime",
        "dependencies", "executornames",
    )  # fmt: skip

    @classmethod
    def from_dict(cls, d: Any, where: str = "conditions.") -> Conditions:
        if not isinstance(d, Mapping):
            raise SpecError(f"{where.rstrip('.')} must be a table")
        _reject_unknown(d, cls._KNOWN, where)
        cpu = parse_cpu(d["cpu"], where + "cpu") if "cpu" in d else 0.0
        mem = 0
        if "mem_mib" in d:
            mem = parse_mem_mib(d["mem_mib"], where + "mem_mib")
        elif "mem" in d:
            mem = parse_mem_mib(d["mem"], where + "mem")
        gpu: Any = d.get("gpu", 0)
        if isinstance(gpu, Mapping):  # ColonyOS {"name", "mem", "count", "nodecount"}
            _reject_unknown(gpu, ("name", "mem", "count", "nodecount"), where + "gpu.")
            gpu = gpu.get("count", 0)
        executor = d.get("executor", d.get("executortype", ""))
        nodes = d.get("nodes", 1)
        if _int(nodes, where + "nodes") > 1:
            raise SpecError(f"{where}nodes={nodes}: multi-node capsules are not supported")
        for k in ("processes", "processes_per_node"):
            if k in d and _int(d[k], where + k) > 1:
                raise SpecError(f"{where}{k}={d[k]}: multi-process capsules are not supported")
        if d.get("executornames"):
            raise SpecError(f"{where}executornames: pin by labels instead of executor names")
        if d.get("dependencies"):
            raise SpecError(f"{where}dependencies: put dependencies at the top level")
        if "walltime" in d:
            _int(d["walltime"], where + "walltime")
        if "colonyname" in d:
            _str(d["colonyname"], where + "colonyname")
        return cls(
            cpu=cpu,
            mem_mib=mem,
            gpu=_int(gpu, where + "gpu"),
            executor=_str(executor, where + "executor", MAX_NAME),
            labels=_pairs(d.get("labels", {}), where + "labels"),
            location=_str(d.get("location", ""), where + "location", MAX_NAME),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "mem": self.mem_mib,
            "gpu": self.gpu,
            "x": self.executor,
            "lb": dict(self.labels),
            "loc": self.location,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Conditions:
        if not isinstance(obj, dict) or set(obj) != {"cpu", "mem", "gpu", "x", "lb", "loc"}:
            raise MalformedFrame("conditions must hold exactly cpu, mem, gpu, x, lb, loc")
        try:
            return cls(
                cpu=_num(obj["cpu"], "cpu"),
                mem_mib=_int(obj["mem"], "mem"),
                gpu=_int(obj["gpu"], "gpu"),
                executor=_str(obj["x"], "executor", MAX_NAME),
                labels=_pairs(obj["lb"], "labels"),
                location=_str(obj["loc"], "location", MAX_NAME),
            )
        except SpecError as e:
            raise MalformedFrame(f"conditions: {e}") from None

    def describe(self) -> str:
        """Requirements as text, e.g. "gpu≥1 and label site=cern" (for cannot-place reasons)."""
        parts: list[str] = []
        if self.cpu:
            parts.append(f"cpu≥{self.cpu:g}")
        if self.mem_mib:
            parts.append(f"mem≥{self.mem_mib} MiB")
        if self.gpu:
            parts.append(f"gpu≥{self.gpu}")
        if self.executor:
            parts.append(f"executor {self.executor}")
        parts.extend(f"label {k}={v}" for k, v in self.labels)
        if self.location:
            parts.append(f"location {self.location}")
        return " and ".join(parts) if parts else "no requirements"


# ---------------------------------------------------------------- spec


_SPEC_KNOWN = (
    "name", "command", "function", "args", "kwargs", "env", "inputs", "outputs",
    "conditions", "priority", "maxwaittime_s", "maxexectime_s", "maxretries",
    "dependencies",
    # ColonyOS function-spec aliases and fields we accept
    "funcname", "nodename", "label", "maxwaittime", "maxexectime", "fs", "channels", "sync",
)  # fmt: skip


def _deadline(v: Any, what: str) -> float:
    """ColonyOS uses -1 (and 0) for "no limit"; we store 0.0 for that.

    Bounded by MAX_DEADLINE_S: a peer-chosen 2^63 s used to reach the executor and
    crash its child set-up (setrlimit overflow); nothing real waits a century."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
        if v != -1:
            raise SpecError(f"{what} must be ≥ 0 (or -1 for no limit)")
        return 0.0
    out = _num(v, what)
    if out > MAX_DEADLINE_S:
        raise SpecError(f"{what} must be at most {MAX_DEADLINE_S} s (100 years; "
                        "-1 or 0 for no limit)")
    return out


@dataclass(frozen=True, slots=True)
class CapsuleSpec:
    name: str = ""
    command: tuple[str, ...] = ()
    function: str = ""
    args: tuple[Scalar, ...] = ()
    kwargs: tuple[tuple[str, Scalar], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    conditions: Conditions = field(default_factory=Conditions)
    priority: int = 0
    maxwaittime_s: float = 0.0
    maxexectime_s: float = 0.0
    maxretries: int = 3
    dependencies: tuple[str, ...] = ()
    sync: tuple[SyncDirective, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.command) == bool(self.function):
            raise SpecError("a capsule needs exactly one of command or function (funcname)")
        if len(self.dependencies) > MAX_DEPENDENCIES:
            raise SpecError(f"at most {MAX_DEPENDENCIES} dependencies")

    @classmethod
    def from_dict(cls, d: Any) -> CapsuleSpec:
        """Parse our TOML/JSON form or a ColonyOS function spec (see module docstring)."""
        if not isinstance(d, Mapping):
            raise SpecError("a capsule spec must be a table / JSON object")
        _reject_unknown(d, _SPEC_KNOWN, "")
        if d.get("fs"):
            raise SpecError("fs: ColonyOS file sync is not supported; use sync directives "
                            "on labels (docs/sync.md) or list input CIDs in inputs")
        if d.get("channels"):
            raise SpecError("channels: not supported")
        cmd: Any = d.get("command", ())
        if isinstance(cmd, str):
            cmd = (cmd,)
        function = d.get("function", d.get("funcname", ""))
        kwargs = d.get("kwargs", {})
        if not isinstance(kwargs, Mapping) or len(kwargs) > MAX_ITEMS:
            raise SpecError("kwargs must be a table")
        args = d.get("args", ())
        if not isinstance(args, (list, tuple)) or len(args) > MAX_ITEMS:
            raise SpecError("args must be a list")
        name = d.get("name", d.get("nodename", d.get("label", "")))
        return cls(
            name=_str(name, "name", MAX_NAME),
            command=_strs(cmd, "command"),
            function=_str(function, "function", MAX_NAME),
            args=tuple(_scalar(a, "args[]") for a in args),
            kwargs=tuple(
                sorted(
                    (_str(k, "kwargs key"), _scalar(v, f"kwargs.{k}")) for k, v in kwargs.items()
                )
            ),
            env=_pairs(d.get("env", {}), "env"),
            inputs=tuple(check_cid(c, "inputs[]") for c in _strs(d.get("inputs", ()), "inputs")),
            outputs=_strs(d.get("outputs", ()), "outputs"),
            conditions=Conditions.from_dict(d.get("conditions", {})),
            priority=_int(d.get("priority", 0), "priority", -_U31, _U31),
            maxwaittime_s=_deadline(d.get("maxwaittime_s", d.get("maxwaittime", 0)), "maxwaittime"),
            maxexectime_s=_deadline(d.get("maxexectime_s", d.get("maxexectime", 0)), "maxexectime"),
            maxretries=_int(d.get("maxretries", 3), "maxretries", 0, 1000),
            dependencies=_strs(d.get("dependencies", ()), "dependencies"),
            sync=_sync(d.get("sync")),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cmd": list(self.command),
            "fn": self.function,
            "args": list(self.args),
            "kw": dict(self.kwargs),
            "env": dict(self.env),
            "in": list(self.inputs),
            "out": list(self.outputs),
            "cond": self.conditions.to_wire(),
            "prio": self.priority,
            "wait": self.maxwaittime_s,
            "exec": self.maxexectime_s,
            "retries": self.maxretries,
            "deps": list(self.dependencies),
            # Only when present: every capsule without sync keeps its bytes (and its id).
            **({"sync": [x.to_wire() for x in self.sync]} if self.sync else {}),
        }

    _WIRE = ("name", "cmd", "fn", "args", "kw", "env", "in", "out", "cond", "prio", "wait",
             "exec", "retries", "deps")  # fmt: skip

    @classmethod
    def from_wire(cls, obj: Any) -> CapsuleSpec:
        if not isinstance(obj, dict) or set(obj) - {"sync"} != set(cls._WIRE):
            raise MalformedFrame("capsule spec has the wrong fields")
        try:
            kw = obj["kw"]
            args = obj["args"]
            if not isinstance(kw, dict) or len(kw) > MAX_ITEMS:
                raise SpecError("kw must be a map")
            if not isinstance(args, list) or len(args) > MAX_ITEMS:
                raise SpecError("args must be a list")
            deps = _strs(obj["deps"], "deps")
            for dep in deps:
                check_capsule_id(dep, "dependency")
            return cls(
                name=_str(obj["name"], "name", MAX_NAME),
                command=_strs(obj["cmd"], "cmd"),
                function=_str(obj["fn"], "fn", MAX_NAME),
                args=tuple(_scalar(a, "args[]") for a in args),
                kwargs=tuple(sorted((_str(k, "kw key"), _scalar(v, "kw")) for k, v in kw.items())),
                env=_pairs(obj["env"], "env"),
                inputs=tuple(check_cid(c, "in[]") for c in _strs(obj["in"], "in")),
                outputs=_strs(obj["out"], "out"),
                conditions=Conditions.from_wire(obj["cond"]),
                priority=_int(obj["prio"], "prio", -_U31, _U31),
                maxwaittime_s=_deadline(obj["wait"], "wait"),
                maxexectime_s=_deadline(obj["exec"], "exec"),
                maxretries=_int(obj["retries"], "retries", 0, 1000),
                dependencies=deps,
                sync=_sync_wire(obj.get("sync")),
            )
        except SpecError as e:
            raise MalformedFrame(f"capsule spec: {e}") from None


# ---------------------------------------------------------------- signed capsule


@dataclass(frozen=True, slots=True)
class Capsule:
    """A spec signed by its submitter. `id` is the CID of the envelope bytes.

    A *derived* capsule (launched by a trigger: trigger_def.py) has no envelope of
    its own: `envelope` is its trigger's (so `submitter` is the trigger's creator),
    `derived` holds the trigger capsule and the `Origin`, the wire form is
    ``[DERIVED_KIND, trigger wire, origin wire]`` (plus `member`, the capsule's name,
    when the trigger launches a workflow) and `id` is the CID of that."""

    spec: CapsuleSpec
    submitted_at: float
    nonce: int
    envelope: Envelope
    id: str
    key: int
    derived: tuple[Capsule, Origin] | None = None
    member: str = ""

    @property
    def submitter(self) -> PeerId:
        return self.envelope.signer_id

    @classmethod
    def sign(
        cls, keypair: KeyPair, spec: CapsuleSpec, submitted_at: float, nonce: int = 0
    ) -> Capsule:
        body = {"spec": spec.to_wire(), "at": submitted_at, "nonce": nonce}
        return cls.from_envelope(keypair.seal(CAPSULE_KIND, body))

    @classmethod
    def from_envelope(cls, env: Envelope) -> Capsule:
        """Verify the submitter's signature, then parse. Raises the WireError family."""
        body = env.open(CAPSULE_KIND)
        if not isinstance(body, dict) or set(body) != {"spec", "at", "nonce"}:
            raise MalformedFrame("capsule body must hold exactly spec, at, nonce")
        at, nonce = body["at"], body["nonce"]
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not finite(at):
            raise MalformedFrame("capsule submitted_at must be a finite number")
        if isinstance(nonce, bool) or not isinstance(nonce, int) or not 0 <= nonce < 1 << 63:
            raise MalformedFrame("capsule nonce must be a non-negative integer")
        spec = CapsuleSpec.from_wire(body["spec"])
        cid = capsule_cid(env.to_bytes())
        return cls(spec, float(at), nonce, env, cid, capsule_key(cid))

    @property
    def trigger_def(self) -> TriggerDef | None:
        """The definition, when this capsule is a trigger (TriggerError if it is bad)."""
        if self.spec.function != TRIGGER_FUNCTION:
            return None
        return TriggerDef.from_kwargs(dict(self.spec.kwargs))

    def to_wire(self) -> list[Any]:
        if self.derived is not None:
            trigger, origin = self.derived
            return [DERIVED_KIND, trigger.to_wire(), origin.to_wire(), *_opt(self.member)]
        return self.envelope.to_wire()

    @classmethod
    def from_wire(cls, obj: Any) -> Capsule:
        if isinstance(obj, list) and len(obj) in (3, 4) and obj[0] == DERIVED_KIND:
            trigger = cls.from_envelope(Envelope.from_wire(obj[1]))  # one level, no nesting
            member = obj[3] if len(obj) == 4 else ""
            if not isinstance(member, str) or (len(obj) == 4 and not member):
                raise MalformedFrame("a derived capsule's workflow member must be a name")
            return cls.derive(trigger, parse_origin(obj[2]), member)
        return cls.from_envelope(Envelope.from_wire(obj))

    @classmethod
    def derive(cls, trigger: Capsule, origin: Origin, member: str = "") -> Capsule:
        """The capsule `trigger` launches for `origin` (for a workflow template, its
        capsule named `member`, dependencies as their derived ids); the same everywhere.

        Raises MalformedFrame when `trigger` is not a trigger, `origin` could not
        have fired it (a tick off the schedule, an event its filter refuses), or the
        rendered template is not a valid spec."""
        try:
            tdef = trigger.trigger_def
        except TriggerError as e:
            raise MalformedFrame(f"trigger {trigger.id}: {e}") from None
        if tdef is None:
            raise MalformedFrame(f"capsule {trigger.id} is not a trigger")
        why = tdef.accepts(origin, trigger.submitted_at)
        if why:
            raise MalformedFrame(f"trigger {trigger.id}: {why}")
        if tdef.is_workflow != bool(member):
            raise MalformedFrame(f"trigger {trigger.id}: a workflow member must be named, "
                                 "and only for a workflow template")
        base = [DERIVED_KIND, trigger.to_wire(), origin.to_wire()]
        try:
            d = tdef.render(trigger.id, trigger.spec.name, origin, member)
            if member:  # parents by their derived ids, as Workflow.sign does by signed ids
                d["dependencies"] = [capsule_cid(cbor_encode([*base, p]))
                                     for p in d.get("dependencies") or []]
            spec = CapsuleSpec.from_dict(d)
        except (SpecError, TriggerError) as e:
            raise MalformedFrame(f"trigger {trigger.id}: its template gives a bad spec: {e}"
                                 ) from None
        cid = capsule_cid(cbor_encode([*base, *_opt(member)]))
        # A tick is the capsule's time; for events, the trigger's creation time: a
        # signed, deterministic time (amnesia.py compares it with a store loss).
        at = float(origin.tick) if origin.tick is not None else trigger.submitted_at
        return cls(spec, at, 0, trigger.envelope, cid, capsule_key(cid), (trigger, origin),
                   member)


def _opt(member: str) -> list[str]:
    return [member] if member else []
