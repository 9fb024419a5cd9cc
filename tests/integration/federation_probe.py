"""A member of colony B with no daemon, for test_federation_netns.py: run inside a
network namespace, it sends A's nodes `prove` requests on /colony/federation/1.0.0
(docs/federation.md, "How the proof travels") showing the grants it is given —
including a forged one, which B's own node never sends (its grant store drops a
grant whose signature does not verify) — and prints A's answers.

    python -c 'import federation_probe; federation_probe.main()' \
        HOME IP MODE GRANTS_FILE TARGET_ADDR…

HOME is a `colony init` home that joined B (its key and its chain to B's owner); IP
the namespace's address; GRANTS_FILE a CBOR list of grant envelopes. Output lines
start with `PROBE ` followed by JSON (the transport's own log lines go to stdout too).

- `once`: one prove per target → `{peer id: {"accepted": [...], "refused": [...]}}`.
- `until-revoked:SECONDS`: the first answers as in `once` (the line that says the
  probe is ready), then again every 0.1 s to each target until it refuses the grant
  as revoked or SECONDS pass → `{peer id: unix time of the first answer refusing the
  grant as revoked, or null}`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import trio

from overlay.core.certs import chain_to_wire
from overlay.core.ids import PeerId
from overlay.core.wire import cbor_decode
from overlay.runtime.net.transport import Transport
from overlay.runtime.process.identity import KEY_FILE, load_identity
from overlay.runtime.services.federation_grantee import PROTO_FEDERATION
from overlay.runtime.services.trust_state import Trust

REVOKED = "was revoked"


def _emit(obj: object) -> None:
    print("PROBE " + json.dumps(obj), flush=True)


async def _probe(home: Path, ip: str, mode: str, grants: list[bytes], targets: list[str]) -> None:
    kp = load_identity(home / KEY_FILE)
    chain = chain_to_wire(Trust(home).own_chain)
    body = {"op": "prove", "chain": chain, "grants": grants, "labels": []}
    async with Transport.open(kp, [f"/ip4/{ip}/tcp/0"]) as t:
        peers: list[PeerId] = [await t.connect(a) for a in targets]

        async def prove(p: PeerId) -> dict[str, Any]:
            reply = await t.request(p, PROTO_FEDERATION, body, timeout=10)
            assert isinstance(reply, dict), reply
            return {"accepted": list(reply.get("accepted") or []),
                    "refused": [str(r) for r in reply.get("refused") or []]}  # fmt: skip

        _emit({str(p): await prove(p) for p in peers})
        if mode == "once":
            return
        deadline = time.monotonic() + float(mode.split(":", 1)[1])
        seen: dict[str, float | None] = {str(p): None for p in peers}
        while time.monotonic() < deadline and None in seen.values():
            for p in peers:
                if seen[str(p)] is None:
                    got = await prove(p)
                    if not got["accepted"] and any(REVOKED in r for r in got["refused"]):
                        seen[str(p)] = time.time()
            await trio.sleep(0.1)
        _emit(seen)


def main() -> None:
    home, ip, mode, grants_file, *targets = sys.argv[1:]
    if mode != "once" and not mode.startswith("until-revoked:"):
        sys.exit(f"unknown mode {mode!r}")
    grants = cbor_decode(Path(grants_file).read_bytes())
    assert isinstance(grants, list) and all(isinstance(g, bytes) for g in grants)
    trio.run(_probe, Path(home), ip, mode, grants, targets)


def parse_output(stdout: str) -> list[Any]:
    """The JSON objects the probe printed, in order."""
    return [json.loads(ln[len("PROBE "):]) for ln in stdout.splitlines()
            if ln.startswith("PROBE ")]  # fmt: skip
