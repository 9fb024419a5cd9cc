"""The Colony SDK: `from overlay.client import Colony` (sync) or `AsyncColony` (trio or
asyncio), typed results and one exception hierarchy over the daemon's control API.

Named `overlay.client` because it is the client of the overlay node's API and sits in
the one `overlay` distribution next to `overlay.cli`, its first user (the CLI calls
nothing else). docs/sdk.md has runnable examples.

The names below are exported lazily (module `__getattr__`, PEP 562): importing
`overlay.client.types` or `overlay.client.errors` must not pull in anyio, trio and the
API server module, which `Colony`/`AsyncColony` need; the `colony` CLI builds its
parser from such light modules and starts in a few tens of milliseconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from overlay.client.aio import AsyncColony
    from overlay.client.errors import (
        ApiCallFailed,
        ApiUnavailable,
        BadRequest,
        ClientError,
        Conflict,
        DaemonUnavailable,
        Forbidden,
        InternalError,
        MethodNotAllowed,
        NotFound,
        Unauthorized,
        Unprocessable,
    )
    from overlay.client.sync import Colony
    from overlay.client.transport import ApiClient
    from overlay.client.types import (
        END_STATES,
        Capsule,
        Fetched,
        Member,
        NodeId,
        Progress,
        Published,
        Submitted,
    )

#: Exported name → the submodule defining it.
_HOME = {
    "AsyncColony": "aio", "Colony": "sync", "ApiClient": "transport",
    **dict.fromkeys((
        "ApiCallFailed", "ApiUnavailable", "BadRequest", "ClientError", "Conflict",
        "DaemonUnavailable", "Forbidden", "InternalError", "MethodNotAllowed", "NotFound",
        "Unauthorized", "Unprocessable"), "errors"),
    **dict.fromkeys((
        "END_STATES", "Capsule", "Fetched", "Member", "NodeId", "Progress", "Published",
        "Submitted"), "types"),
}

__all__ = [
    "END_STATES", "ApiCallFailed", "ApiClient", "ApiUnavailable", "AsyncColony", "BadRequest",
    "Capsule", "ClientError", "Colony", "Conflict", "DaemonUnavailable", "Fetched",
    "Forbidden", "InternalError", "Member", "MethodNotAllowed", "NodeId", "NotFound",
    "Progress", "Published", "Submitted", "Unauthorized", "Unprocessable",
]


def __getattr__(name: str) -> Any:
    """Import the submodule defining `name` on first use, then cache the name here."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
