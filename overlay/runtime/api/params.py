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


def int_field(body: dict[str, object], name: str, default: int, *, lo: int = 0,
              hi: int = 1 << 63) -> int:
    """An optional integer field of a JSON body in [lo, hi) (absent or null: `default`).

    Bounded by default: such a number goes into signed records whose decoders take
    unsigned 63-bit integers only, and a core refuses to build an invalid record by
    raising (a bug of ours, which stops the daemon): the API must refuse it first."""
    v = body.get(name)
    if v is None:
        return default
    if type(v) is not int:
        raise ApiError(400, f"{name} must be an integer, not {v!r:.60}")
    if not lo <= v < hi:
        raise ApiError(400, f"{name} must be in [{lo}, {hi}), not {v}")
    return v


def cid_arg(text: object) -> Cid:
    try:
        return Cid.parse(str(text))
    except ColonyError as e:
        raise ApiError(400, str(e)) from None
