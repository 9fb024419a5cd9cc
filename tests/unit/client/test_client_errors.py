"""The SDK's error mapping: the API's stable codes (and, for old daemons, the status)
choose the exception class; the message is kept for the user."""

from __future__ import annotations

import pytest

from overlay.client import errors as e


@pytest.mark.parametrize(("status", "body", "cls", "code"), [
    (400, {"error": {"code": "bad_request", "message": "m"}}, e.BadRequest, "bad_request"),
    (404, {"error": {"code": "not_found", "message": "m"}}, e.NotFound, "not_found"),
    (409, {"error": {"code": "conflict", "message": "m"}}, e.Conflict, "conflict"),
    (422, {"error": {"code": "unprocessable", "message": "m"}}, e.Unprocessable,
     "unprocessable"),
    (500, {"error": {"code": "internal", "message": "m"}}, e.InternalError, "internal"),
    # a finer code the SDK has no class for: the status picks the class, code is kept
    (502, {"error": {"code": "dial_failed", "message": "m"}}, e.ApiCallFailed, "dial_failed"),
    (400, {"error": {"code": "dial_failed", "message": "m"}}, e.BadRequest, "dial_failed"),
    # the shape before one error shape: a string
    (401, {"error": "m"}, e.Unauthorized, "unauthorized"),
    (418, None, e.ApiCallFailed, "api_error"),
])
def test_from_response(status: int, body: object, cls: type, code: str) -> None:
    err = e.from_response(status, body, "m")
    assert type(err) is cls and err.code == code and err.status == status
    assert str(err) == "m"
    assert isinstance(err, e.ClientError)


def test_unavailable_is_not_an_api_failure() -> None:
    assert not issubclass(e.DaemonUnavailable, e.ApiCallFailed)
    assert e.ApiUnavailable is e.DaemonUnavailable
