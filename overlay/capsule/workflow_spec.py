"""Workflows: named capsule specs whose dependencies name each other (DAG order, signing).

Split from spec.py: a workflow is a list of `CapsuleSpec`s plus the order they are
signed in (parents first, so a child names its parents by capsule id).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from overlay.capsule.spec import (
    MAX_NAME,
    MAX_WORKFLOW,
    Capsule,
    CapsuleSpec,
    SpecError,
    _reject_unknown,
    _str,
)
from overlay.core.crypto import KeyPair


@dataclass(frozen=True, slots=True)
class Workflow:
    """Named specs whose `dependencies` name other specs of the same workflow."""

    name: str
    specs: tuple[CapsuleSpec, ...]

    @classmethod
    def from_dict(cls, d: Any) -> Workflow:
        """``{"name": …, "capsules": [spec…]}``; a bare list (ColonyOS workflow JSON:
        function specs with ``nodename`` and ``conditions.dependencies``) is accepted."""
        if isinstance(d, list):
            d = {"capsules": d}
        if not isinstance(d, Mapping):
            raise SpecError("a workflow must be a table with a capsules list")
        _reject_unknown(d, ("name", "capsules", "functionspecs"), "")
        raw = d.get("capsules", d.get("functionspecs"))
        if not isinstance(raw, list) or not raw or len(raw) > MAX_WORKFLOW:
            raise SpecError(f"a workflow needs 1..{MAX_WORKFLOW} capsules")
        specs = []
        for i, item in enumerate(raw):
            if isinstance(item, Mapping) and isinstance(item.get("conditions"), Mapping):
                cond = dict(item["conditions"])
                deps = cond.pop("dependencies", None)
                if deps:  # ColonyOS puts workflow edges in conditions.dependencies
                    item = {**item, "conditions": cond, "dependencies": deps}
            try:
                specs.append(CapsuleSpec.from_dict(item))
            except SpecError as e:
                raise SpecError(f"capsules[{i}]: {e}") from None
        wf = cls(_str(d.get("name", ""), "name", MAX_NAME), tuple(specs))
        wf.order()
        return wf

    def order(self) -> list[CapsuleSpec]:
        """Specs in a dependency-respecting order; SpecError on a cycle or bad name."""
        by_name: dict[str, CapsuleSpec] = {}
        for s in self.specs:
            if not s.name:
                raise SpecError("every capsule of a workflow needs a name")
            if s.name in by_name:
                raise SpecError(f"two capsules are named {s.name!r}")
            by_name[s.name] = s
        for s in self.specs:
            for dep in s.dependencies:
                if dep not in by_name:
                    raise SpecError(f"{s.name!r} depends on unknown capsule {dep!r}")
        # Iterative DFS with colours; order of visiting = declaration order (determinism).
        state: dict[str, int] = {}  # 1 = on stack, 2 = done
        out: list[CapsuleSpec] = []
        for root in by_name:
            if state.get(root):
                continue
            stack: list[tuple[str, int]] = [(root, 0)]
            state[root] = 1
            while stack:
                name, i = stack[-1]
                deps = by_name[name].dependencies
                if i < len(deps):
                    stack[-1] = (name, i + 1)
                    dep = deps[i]
                    if state.get(dep) == 1:
                        path = [n for n, _ in stack]
                        cycle = [*path[path.index(dep) :], dep]
                        raise SpecError("dependency cycle: " + " → ".join(cycle))
                    if not state.get(dep):
                        state[dep] = 1
                        stack.append((dep, 0))
                else:
                    state[name] = 2
                    out.append(by_name[name])
                    stack.pop()
        return out

    def sign(self, keypair: KeyPair, submitted_at: float, nonce: int = 0) -> list[Capsule]:
        """Sign every spec, parents first, with dependency names replaced by ids."""
        ids: dict[str, str] = {}
        out: list[Capsule] = []
        for spec in self.order():
            resolved = _replace_deps(spec, tuple(ids[d] for d in spec.dependencies))
            cap = Capsule.sign(keypair, resolved, submitted_at, nonce)
            ids[spec.name] = cap.id
            out.append(cap)
        return out


def _replace_deps(spec: CapsuleSpec, deps: tuple[str, ...]) -> CapsuleSpec:
    return replace(spec, dependencies=deps)
