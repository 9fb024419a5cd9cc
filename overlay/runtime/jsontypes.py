"""JSON values as the runtime's I/O edges (the HTTP API, status reports) build them.

`Json` is what `json.dumps` accepts and the HTTP API sends: nested containers are
read-only (`Sequence`, `Mapping`) so a `list[str]` or a `dict[str, int]` is a `Json`
without a copy. `JsonObject` is a JSON object a function builds and returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Json = None | bool | int | float | str | Sequence["Json"] | Mapping[str, "Json"]
JsonObject = dict[str, Json]

