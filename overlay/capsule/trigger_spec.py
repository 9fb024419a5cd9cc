"""The capsule spec of a trigger: one constructor for the API and the simulator.

A trigger is a capsule with function `colony.trigger`, placed on an executor of kind
`trigger` and re-placed after its node dies as often as it takes (`TRIGGER_RETRIES`);
its definition is in the spec's kwargs (trigger_def.py). Kept apart from spec.py,
which trigger_def.py's constants feed, so neither imports the other's dependents.
"""

from __future__ import annotations

from collections.abc import Mapping

from overlay.capsule.spec import CapsuleSpec, Conditions
from overlay.capsule.trigger_def import TRIGGER_EXECUTOR, TRIGGER_FUNCTION, TriggerDef

#: A trigger is re-placed after its node dies, as often as it takes.
TRIGGER_RETRIES = 1000


def trigger_spec(name: str, kw: Mapping[str, str | int | float]) -> tuple[CapsuleSpec, TriggerDef]:
    """The spec for a trigger named `name` with definition `kw`, and the definition.

    Raises TriggerError for a bad definition, SpecError for a bad spec."""
    tdef = TriggerDef.from_kwargs(kw)
    spec = CapsuleSpec(name=name, function=TRIGGER_FUNCTION, kwargs=tuple(sorted(kw.items())),
                       conditions=Conditions(executor=TRIGGER_EXECUTOR),
                       maxretries=TRIGGER_RETRIES)  # fmt: skip
    return spec, tdef
