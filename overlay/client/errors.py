"""The SDK's one exception hierarchy, mapped from the control API's stable error codes.

Every error response of the API has one shape, `{"error": {"code": CODE, "message":
TEXT}}` (overlay/runtime/api/server.py `error_body`); `from_response` turns it into the
subclass for CODE, falling back on the HTTP status, so callers catch `NotFound` rather
than compare numbers. The message is meant for a human and is what the CLI prints.
"""

from __future__ import annotations

from overlay.core.errors import ColonyError


class ClientError(ColonyError):
    """Base of every error the SDK raises. `status` is 0 when no response came back."""

    code = "client_error"

    def __init__(self, message: str, *, status: int = 0, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        if code is not None:
            self.code = code


class DaemonUnavailable(ClientError):
    """No daemon answered: not running, wrong address, no token file, or timed out."""

    code = "unavailable"


class ApiCallFailed(ClientError):
    """The daemon answered with an error response."""

    code = "api_error"


class BadRequest(ApiCallFailed):
    code = "bad_request"


class Unauthorized(ApiCallFailed):
    code = "unauthorized"


class Forbidden(ApiCallFailed):
    code = "forbidden"


class NotFound(ApiCallFailed):
    code = "not_found"


class MethodNotAllowed(ApiCallFailed):
    code = "method_not_allowed"


class Conflict(ApiCallFailed):
    code = "conflict"


class Unprocessable(ApiCallFailed):
    code = "unprocessable"


class InternalError(ApiCallFailed):
    code = "internal"


_BY_CODE: dict[str, type[ApiCallFailed]] = {
    c.code: c for c in (BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed,
                        Conflict, Unprocessable, InternalError)
}
_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
              405: MethodNotAllowed, 409: Conflict, 422: Unprocessable, 500: InternalError}

#: The names the CLI and older callers used.
ApiUnavailable = DaemonUnavailable


def from_response(status: int, body: object, reason: str = "") -> ApiCallFailed:
    """The exception for one error response (plain or the last line of a stream)."""
    err = body.get("error") if isinstance(body, dict) else None
    code: str | None = None
    if isinstance(err, dict):
        code = str(err.get("code") or "") or None
        message = str(err.get("message") or reason)
    elif isinstance(err, str):  # a daemon older than the one error shape
        message = err
    else:
        message = reason or f"HTTP {status}"
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status) or ApiCallFailed
    return cls(message, status=status, code=code)
