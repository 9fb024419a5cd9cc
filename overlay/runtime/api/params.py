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


def cid_arg(text: object) -> Cid:
    try:
        return Cid.parse(str(text))
    except ColonyError as e:
        raise ApiError(400, str(e)) from None
