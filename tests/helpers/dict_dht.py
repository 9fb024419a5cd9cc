"""A DHT of one process for service tests: GetValue and PutValue on a dict, with the
daemon's real validators and selectors (dht/labels.py `default_validators`), behind
the `DhtCalls` interface services take (overlay/runtime/context.py).

What it leaves out is the network: no lookups, no quorum, no k closest. `serve_bad`
holds raw values returned as they are (a DHT node serving a record that does not
verify), so a service's own checks can be tested.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import overload

from dht.api import (
    FindNode,
    GetProviders,
    GetValue,
    LookupDone,
    Provide,
    ProvideDone,
    PutValue,
    Stored,
    Value,
)
from dht.labels import default_validators
from dht.records import ValidRecord


class DictDht:
    def __init__(self) -> None:
        self.validators = default_validators()
        self.records: dict[bytes, ValidRecord] = {}
        self.serve_bad: dict[bytes, bytes] = {}
        self.gets = 0
        self.puts = 0

    # The overloads of `DhtCalls.call`, so a DictDht is one (it never runs a Provide).
    @overload
    async def call(self, make: Callable[[int], Provide], timeout_s: float = ...
                   ) -> ProvideDone: ...

    @overload
    async def call(self, make: Callable[[int], FindNode | GetProviders | GetValue | PutValue],
                   timeout_s: float = ...) -> LookupDone: ...

    async def call(self, make: Callable[[int], object], timeout_s: float = 60.0
                   ) -> LookupDone | ProvideDone:
        cmd = make(1)
        if isinstance(cmd, GetValue):
            self.gets += 1
            bad = self.serve_bad.get(cmd.key)
            if bad is not None:
                return LookupDone(1, Value(bad, 0, bad, 1), hops=1, queried=1)
            r = self.records.get(cmd.key)
            if r is None:
                return LookupDone(1, Value(None, 0, None, 0), hops=1, queried=1)
            return LookupDone(1, Value(r.value, r.seq, r.payload, 1), hops=1, queried=1)
        if isinstance(cmd, PutValue):
            self.puts += 1
            rec = self.validators.validate(cmd.key, cmd.value, time.time())  # raises if bad
            if self.validators.better(self.records.get(cmd.key), rec):
                self.records[cmd.key] = rec
            return LookupDone(1, Stored(1, ()), hops=1, queried=1)
        raise AssertionError(f"DictDht does not run {type(cmd).__name__}")


__all__ = ["DictDht"]
