"""The dag-cbor a CAR header needs: a map ``{roots: [CID…], version: N}``.

CARv1 (ipld.io/specs/transport/car/carv1) starts with a dag-cbor map holding the
root CIDs and the version. A CID in dag-cbor is CBOR tag 42 around a byte string
whose first byte is 0x00 (the identity multibase prefix) followed by the binary CID.
Encoding is canonical dag-cbor (map keys sorted by length, then bytes: "roots" before
"version"), so a header written here is byte-identical to the one `@ipld/car` writes.

Invariant: `decode_car_header(encode_car_header(r, v)) == (v, r)`. Anything that is not
such a map raises `MalformedFrame` naming what is wrong.
"""

from __future__ import annotations

from typing import Any

import cbor2

from overlay.core.errors import MalformedFrame

CID_TAG = 42


def encode_car_header(roots: list[bytes], version: int = 1) -> bytes:
    """Canonical dag-cbor of ``{roots, version}``; `roots` are binary CIDs."""
    return cbor2.dumps(
        {"roots": [cbor2.CBORTag(CID_TAG, b"\x00" + r) for r in roots], "version": version},
        canonical=True,
    )


def _tag_hook(tag: cbor2.CBORTag, _immutable: bool) -> Any:
    if tag.tag != CID_TAG:
        raise MalformedFrame(f"CBOR tag {tag.tag} is not allowed in dag-cbor")
    value = tag.value
    if not isinstance(value, bytes) or not value.startswith(b"\x00") or len(value) < 3:
        raise MalformedFrame("CID tag 42 must hold 0x00 + binary CID bytes")
    return _CidBytes(value[1:])


class _CidBytes(bytes):
    """Binary CID bytes that came from a tag 42 (distinguished from plain bytes)."""


def decode_car_header(data: bytes) -> tuple[int, list[bytes]]:
    """(version, root CIDs as bytes) of a CAR header; `MalformedFrame` if it is not one."""
    try:
        obj = cbor2.loads(data, tag_hook=_tag_hook)
    except MalformedFrame:
        raise
    except Exception as e:  # cbor2 raises several types on garbage
        if isinstance(e.__cause__, MalformedFrame):
            raise e.__cause__ from None  # our hook's, wrapped by cbor2 (≥ 6)
        raise MalformedFrame(f"CAR header is not dag-cbor: {e}") from None
    if not isinstance(obj, dict):
        raise MalformedFrame("CAR header is not a dag-cbor map")
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MalformedFrame("CAR header has no integer version")
    roots = obj.get("roots", [] if version == 2 else None)
    if not isinstance(roots, list) or not all(isinstance(r, _CidBytes) for r in roots):
        raise MalformedFrame("CAR header roots must be a list of CIDs")
    return version, [bytes(r) for r in roots]
