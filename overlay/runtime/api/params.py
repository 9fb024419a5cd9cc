"""Parsing of control-API arguments shared by the route modules: a bad one is a 400."""

from __future__ import annotations

from overlay.core.cid import Cid
from overlay.core.errors import ColonyError
from overlay.core.ids import PeerId
from overlay.runtime.api.server import ApiError


def peer_arg(text: object) -> PeerId:
    try:
        return PeerId.from_base58(str(text))
    except ColonyError:
        raise ApiError(400, f"not a peer id: {text!r}") from None


def int_field(body: dict[str, object], name: str, default: int) -> int:
    """An optional integer field of a JSON body (absent or null: `default`)."""
    v = body.get(name)
    if v is None:
        return default
    if type(v) is not int:
        raise ApiError(400, f"{name} must be an integer, not {v!r:.60}")
    return v


def cid_arg(text: object) -> Cid:
    try:
        return Cid.parse(str(text))
    except ColonyError as e:
        raise ApiError(400, str(e)) from None
