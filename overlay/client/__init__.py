"""The Colony SDK: `from overlay.client import Colony` (sync) or `AsyncColony` (trio or
asyncio), typed results and one exception hierarchy over the daemon's control API.

Named `overlay.client` because it is the client of the overlay node's API and sits in
the one `overlay` distribution next to `overlay.cli`, its first user (the CLI calls
nothing else). docs/sdk.md has runnable examples.
"""

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

__all__ = [
    "END_STATES", "ApiCallFailed", "ApiClient", "ApiUnavailable", "AsyncColony", "BadRequest",
    "Capsule", "ClientError", "Colony", "Conflict", "DaemonUnavailable", "Fetched",
    "Forbidden", "InternalError", "Member", "MethodNotAllowed", "NodeId", "NotFound",
    "Progress", "Published", "Submitted", "Unauthorized", "Unprocessable",
]
