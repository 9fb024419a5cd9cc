"""Pins: the roots garbage collection keeps (kubo's pinner semantics).

A pin is recursive (the block and every block reachable from it through dag-pb links)
or direct (the block alone). A pin may carry names (``colony pin add --name NAME``); a
CID pinned under several names stays pinned until every name and the CID itself are
removed. Records live in the block store's ``pins`` database, keyed by binary CID:

    value = mode byte (b"R" recursive, b"D" direct) + names joined by b"\\0"

Invariants: a recursive pin is only recorded when every block of its DAG is present
(checked through the reference index, so no block is decoded); recursive supersedes
direct; pins iterate in key order (deterministic output).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from overlay.core.cid import Cid
from overlay.core.errors import LocalProtocolError
from store.blockstore import BlockNotFound, BlockStore, Reader, StoreError

#: Blocks visited between releases of mapped LMDB pages (a lookup maps the value's
#: first page, and the kernel maps cached neighbours with it; see blockstore).
RELEASE_EVERY_BLOCKS = 64
#: Names are short labels, not paths or documents.
MAX_PIN_NAME_CHARS = 255


class PinMode(StrEnum):
    RECURSIVE = "recursive"
    DIRECT = "direct"


_MODE_BYTE = {PinMode.RECURSIVE: b"R", PinMode.DIRECT: b"D"}
_BYTE_MODE = {v: k for k, v in _MODE_BYTE.items()}


class NotPinned(StoreError):
    """`pin rm` of a CID (or name) that is not pinned."""


@dataclass(frozen=True, slots=True)
class Pin:
    cid: Cid
    mode: PinMode
    names: tuple[str, ...]


def _encode(mode: PinMode, names: tuple[str, ...]) -> bytes:
    return _MODE_BYTE[mode] + b"\0".join(n.encode("utf-8") for n in names)


def _decode(key: bytes, value: bytes) -> Pin:
    mode = _BYTE_MODE.get(bytes(value[:1]))
    if mode is None:
        raise StoreError(f"pin record for {Cid.from_bytes(key)} is damaged")
    rest = bytes(value[1:])
    names = tuple(n.decode("utf-8") for n in rest.split(b"\0")) if rest else ()
    return Pin(Cid.from_bytes(key), mode, names)


def check_name(name: str) -> str:
    if not name or len(name) > MAX_PIN_NAME_CHARS or "\0" in name:
        raise LocalProtocolError(
            f"pin name {name!r} must be 1..{MAX_PIN_NAME_CHARS} characters without NUL"
        )
    return name


def walk(
    reader: Reader, root: Cid, *, on_missing: Callable[[Cid], None] | None = None
) -> Iterator[bytes]:
    """Multihashes of `root` and every block reachable from it (each once).

    Uses the reference index; memory is the set of visited blocks. An absent block
    raises `BlockNotFound` naming it, unless `on_missing` is given (then it is called).
    """
    seen: set[bytes] = set()
    stack: list[tuple[bytes, Cid]] = [(root.multihash, root)]
    while stack:
        mh, cid = stack.pop()
        if mh in seen:
            continue
        seen.add(mh)
        if not reader.has(cid):
            if on_missing is not None:
                on_missing(cid)
                continue
            raise BlockNotFound(cid, f"part of the DAG of {root}")
        yield mh
        if len(seen) % RELEASE_EVERY_BLOCKS == 0:
            reader.store.release_mapped_pages()
        links = reader.links(mh)
        if links:
            for raw in reversed(links):
                child = Cid.from_bytes(raw)
                if child.multihash not in seen:
                    stack.append((child.multihash, child))


class Pins:
    """Pin set operations on a `BlockStore`."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store

    def _get(self, txn: Any, cid: Cid) -> Pin | None:
        v = txn.get(cid.to_bytes(), db=self.store.pins_db)
        return None if v is None else _decode(cid.to_bytes(), v)

    def add(self, cid: Cid, *, recursive: bool = True, name: str | None = None) -> Pin:
        """Pin `cid`; a recursive pin requires its whole DAG to be in the store."""
        if name is not None:
            check_name(name)
        with self.store.reader() as r:
            if recursive:
                for _ in walk(r, cid):
                    pass
            elif not r.has(cid):
                raise BlockNotFound(cid, "cannot pin a block the store does not hold")
        mode = PinMode.RECURSIVE if recursive else PinMode.DIRECT

        def txn_fn(txn: Any) -> Pin:
            old = self._get(txn, cid)
            names: tuple[str, ...] = old.names if old else ()
            if name is not None and name not in names:
                names = tuple(sorted((*names, name)))
            new_mode = mode
            if old is not None and old.mode is PinMode.RECURSIVE:
                new_mode = PinMode.RECURSIVE
            pin = Pin(cid, new_mode, names)
            txn.put(cid.to_bytes(), _encode(new_mode, names), db=self.store.pins_db)
            return pin

        return self.store._write(txn_fn)

    def rm(self, cid: Cid, *, name: str | None = None) -> Pin | None:
        """Remove a name (the pin stays while other names remain) or the whole pin.

        Returns the remaining pin, or None when the CID is no longer pinned.
        """

        def txn_fn(txn: Any) -> Pin | None:
            old = self._get(txn, cid)
            if old is None:
                raise NotPinned(f"{cid} is not pinned")
            if name is not None:
                if name not in old.names:
                    raise NotPinned(f"{cid} is not pinned under the name {name!r}")
                names = tuple(n for n in old.names if n != name)
                if names:
                    txn.put(cid.to_bytes(), _encode(old.mode, names), db=self.store.pins_db)
                    return Pin(cid, old.mode, names)
            txn.delete(cid.to_bytes(), db=self.store.pins_db)
            return None

        return self.store._write(txn_fn)

    def get(self, cid: Cid) -> Pin | None:
        with self.store.env.begin() as txn:
            return self._get(txn, cid)

    def ls(self, mode: PinMode | None = None) -> list[Pin]:
        out: list[Pin] = []
        with self.store.env.begin() as txn:
            for k, v in txn.cursor(db=self.store.pins_db):
                pin = _decode(k, v)
                if mode is None or pin.mode is mode:
                    out.append(pin)
        return out

    def by_name(self, name: str) -> list[Pin]:
        return [p for p in self.ls() if name in p.names]
