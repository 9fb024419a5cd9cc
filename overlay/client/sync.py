"""`Colony`: the synchronous SDK over the control API (DESIGN §9), used by the CLI.

One method per thing the CLI does; each returns typed results (overlay/client/types.py)
or, for data with no fixed shape yet (stats, doctor, DHT replies), the JSON object.
Long operations stream: `publish`/`fetch` call `progress(Progress)` per item, `wait`
and `logs` and `events` yield as the daemon reports. Every call has a timeout
(`timeout_s` of the client, or the call's own for the long ones) and raises the SDK's
errors (overlay/client/errors.py), never a bare OSError or KeyError.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

from overlay.client.errors import ClientError
from overlay.client.transport import ApiClient
from overlay.client.types import (
    Capsule,
    Fetched,
    JsonDict,
    Member,
    NodeId,
    Progress,
    Published,
    Submitted,
)

ProgressFn = Callable[[Progress], None]
#: An NDJSON stream; closing it early closes its HTTP connection.
JsonStream = Generator[JsonDict, None, None]
#: Timeout of calls that follow something for as long as it lasts (wait, logs, events).
FOLLOW_TIMEOUT_S = 24 * 3600.0


class Colony:
    """A client of one daemon. `Colony.for_home(path)` finds it from its home."""

    def __init__(self, host: str, port: int, token: str, *, timeout_s: float = 60.0) -> None:
        self.api = ApiClient(host, port, token, timeout_s)

    @classmethod
    def for_home(cls, home: Path | str, *, timeout_s: float = 60.0) -> Colony:
        c = cls.__new__(cls)
        c.api = ApiClient.for_home(Path(home), timeout_s)
        return c

    def _with(self, timeout_s: float | None) -> ApiClient:
        if timeout_s is None or timeout_s == self.api.timeout_s:
            return self.api
        return ApiClient(self.api.host, self.api.port, self.api.token, timeout_s)

    # ------------------------------------------------------------ node
    def id(self) -> NodeId:
        return NodeId.from_json(self.api.call("GET", "/v1/id"))

    def members(
        self, *, include_all: bool = False, status: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> list[Member]:
        """Members in this node's view; `status` and `labels` filter (all must match)."""
        rows = [Member.from_json(r) for r in
                self.api.call("GET", "/v1/members", all="1" if include_all or status else None)]
        return [m for m in rows
                if (status is None or m.state == status)
                and all_match(m.labels, labels or {})]

    def peers(self) -> list[str]:
        return list(self.api.call("GET", "/v1/peers"))

    def connect(self, multiaddr: str) -> JsonDict:
        """Dial a peer at `multiaddr` (…/p2p/PEER) from the running daemon."""
        return dict(self.api.call("POST", "/v1/connect", {"addr": multiaddr}))

    def labels(self) -> dict[str, str]:
        """This node's labels (what capsules' `conditions.labels` match)."""
        return dict(self.api.call("GET", "/v1/labels")["labels"])

    def set_labels(self, set: dict[str, str] | None = None,
                   delete: list[str] | None = None) -> dict[str, str]:
        """Change labels on the running node (saved, re-announced by gossip at once);
        returns the new set."""
        body = {"set": dict(set or {}), "delete": list(delete or [])}
        return dict(self.api.call("POST", "/v1/labels", body)["labels"])

    def stats(self) -> JsonDict:
        return dict(self.api.call("GET", "/v1/stats"))

    def cells(self) -> JsonDict:
        """This node's gossip cell and the cells it knows (members, free capacity)."""
        return dict(self.api.call("GET", "/v1/cells"))

    def doctor(self, *, timeout_s: float | None = None) -> JsonDict:
        return dict(self._with(timeout_s).call("GET", "/v1/doctor"))

    def leave(self) -> None:
        self.api.call("POST", "/v1/leave")

    # ------------------------------------------------------------ data
    def publish(
        self, path: Path | str, *, cid_version: int | None = None,
        progress: ProgressFn | None = None, timeout_s: float | None = None,
    ) -> Published:
        body: JsonDict = {"path": str(Path(path).resolve())}
        if cid_version is not None:
            body["cid_version"] = cid_version
        final = _drain(self._with(timeout_s).stream("POST", "/v1/publish", body), progress)
        return Published.from_json(final)

    def fetch(
        self, cid: str, *, progress: ProgressFn | None = None, timeout_s: float | None = None,
    ) -> Fetched:
        final = _drain(self._with(timeout_s).stream("POST", "/v1/fetch", {"cid": cid}),
                       progress)
        return Fetched.from_json(cid, final)

    def cat(self, path: str, *, offset: int = 0, length: int | None = None,
            timeout_s: float | None = None) -> Generator[bytes, None, None]:
        """The bytes of the file at `path` (CID, CID/a/b or /ipfs/CID/a/b), in pieces as
        they arrive; `b"".join(colony.cat(p))` for a small file."""
        yield from self._with(timeout_s).read_bytes(
            "/v1/cat", arg=path, offset=offset or None, length=length)

    def ls(self, path: str) -> JsonDict:
        """{path, cid, kind, size, entries: [{name, cid, kind, size, tsize}]}."""
        return dict(self.api.call("GET", "/v1/ls", arg=path))

    def get(self, path: str, output: Path | str, *, progress: ProgressFn | None = None,
            timeout_s: float | None = None) -> JsonDict:
        """Write the file or tree at `path` to the new path `output`. The daemon writes
        it, so `output` is on the daemon's host (as `publish` reads there)."""
        body = {"arg": path, "output": str(Path(output).resolve())}
        return _drain(self._with(timeout_s).stream("POST", "/v1/get", body), progress)

    def dht(self, op: str, **body: str) -> JsonDict:
        """`op` is findprovs {cid}, findpeer {peer}, put {value} or get {name}."""
        return dict(self.api.call("POST", f"/v1/dht/{op}", body))

    # ------------------------------------------------------------ capsules
    def submit(self, spec: JsonDict, *, nonce: int | None = None) -> Submitted:
        body: JsonDict = {"spec": spec}
        if nonce is not None:
            body["nonce"] = nonce
        return Submitted.from_json(self.api.call("POST", "/v1/capsules/submit", body))

    def submit_workflow(self, workflow: JsonDict, *, nonce: int | None = None) -> JsonDict:
        body: JsonDict = {"workflow": workflow}
        if nonce is not None:
            body["nonce"] = nonce
        return dict(self.api.call("POST", "/v1/workflows/submit", body))

    def ps(self) -> list[Capsule]:
        return [Capsule.from_json(r) for r in self.api.call("GET", "/v1/capsules")]

    def capsule(self, capsule_id: str) -> Capsule:
        return Capsule.from_json(self.api.call("GET", "/v1/capsules/get", id=capsule_id))

    def watch(self, capsule_id: str, *, timeout_s: float | None = None) -> JsonStream:
        """The capsule's states as they change; the last item has `done`."""
        query = {"id": capsule_id, "timeout": None if timeout_s is None else str(timeout_s)}
        api = self._with(FOLLOW_TIMEOUT_S if timeout_s is None else timeout_s + 30.0)
        yield from api.stream("GET", "/v1/capsules/wait", **query)

    def wait(self, capsule_id: str, *, timeout_s: float | None = None) -> Capsule:
        """Block until the capsule ends (or the daemon's wait times out); its last state."""
        final: JsonDict = {}
        for item in self.watch(capsule_id, timeout_s=timeout_s):
            final = item
        if "id" not in final:
            raise ClientError(f"wait for {capsule_id} ended with no state: {final}")
        return Capsule.from_json(final)

    def logs(self, capsule_id: str, *, follow: bool = False) -> JsonStream:
        """NDJSON log items: `{data}` chunks, `{attempt, executor}`, last `{done, state}`."""
        api = self._with(FOLLOW_TIMEOUT_S if follow else None)
        yield from api.stream("GET", "/v1/capsules/logs", id=capsule_id,
                              follow="1" if follow else None)

    def cancel(self, capsule_id: str, reason: str | None = None) -> JsonDict:
        return dict(self.api.call("POST", "/v1/capsules/cancel",
                                  {"id": capsule_id, "reason": reason}))

    # ------------------------------------------------------------ triggers
    def add_trigger(self, template: JsonDict, *, on: str, name: str = "",
                    schedule: str | None = None, filter: str | None = None,
                    catchup: str | None = None, count: int | None = None,
                    within_s: float | None = None) -> JsonDict:
        """Create a trigger (`on="user:NAME"`), a cron (`on="cron", schedule=…`) or a
        generator (`count`/`within_s`); `template` is the capsule spec it launches."""
        body: JsonDict = {"template": template, "on": on, "name": name}
        for key, v in (("schedule", schedule), ("filter", filter), ("catchup", catchup),
                       ("count", count), ("within_s", within_s)):
            if v is not None:
                body[key] = v
        return dict(self.api.call("POST", "/v1/triggers/add", body))

    def triggers(self) -> list[JsonDict]:
        return [dict(r) for r in self.api.call("GET", "/v1/triggers")]

    def trigger(self, trigger_id: str) -> JsonDict:
        return dict(self.api.call("GET", "/v1/triggers/get", id=trigger_id))

    def remove_trigger(self, trigger_id: str) -> JsonDict:
        return dict(self.api.call("POST", "/v1/triggers/rm", {"id": trigger_id}))

    # ------------------------------------------------------------ sync labels
    def sync_pull(self, label: str, directory: Path | str) -> JsonDict:
        """Write the label's current version at `directory` (a new path)."""
        return dict(self.api.call("POST", "/v1/sync/pull",
                                  {"label": label, "dir": str(Path(directory).resolve())}))

    def sync_push(self, label: str, directory: Path | str, *, base: str | None = None,
                  conflict: str = "keep-newest") -> JsonDict:
        """Import `directory` and move the label to it; `conflict` decides when the
        label moved since `base` (default: what this node last pulled or pushed there)."""
        body: JsonDict = {"label": label, "dir": str(Path(directory).resolve()),
                          "conflict": conflict}
        if base is not None:
            body["base"] = base
        return dict(self.api.call("POST", "/v1/sync/push", body))

    def sync_status(self, label: str, directory: Path | str | None = None) -> JsonDict:
        d = str(Path(directory).resolve()) if directory is not None else None
        return dict(self.api.call("GET", "/v1/sync/status", label=label, dir=d))

    # ------------------------------------------------------------ trust
    def trust(self) -> JsonDict:
        """Colony trust state: owner, this node's certificate, revocations."""
        return dict(self.api.call("GET", "/v1/trust"))

    def set_private(self, cid: str, private: bool = True) -> JsonDict:
        return dict(self.api.call("POST", "/v1/trust/private",
                                  {"cid": cid, "private": private}))

    def revoke(self, revocation_hex: str) -> JsonDict:
        """Publish a signed revocation (hex of its envelope bytes)."""
        return dict(self.api.call("POST", "/v1/trust/revoke", {"revocation": revocation_hex}))

    # ------------------------------------------------------------ federation
    def grants(self) -> JsonDict:
        """Grants this colony gave and holds, with the usage counted (docs/federation.md)."""
        return dict(self.api.call("GET", "/v1/grants"))

    def publish_grant(self, grant_hex: str) -> JsonDict:
        """Keep a grant of this colony in the daemon and put it in the DHT."""
        return dict(self.api.call("POST", "/v1/grants/publish", {"grant": grant_hex}))

    def fed_submit(self, colony: str, spec: JsonDict, *, nonce: int | None = None) -> JsonDict:
        """Submit a capsule to colony `colony` through a grant this colony holds."""
        body: JsonDict = {"colony": colony, "spec": spec}
        if nonce is not None:
            body["nonce"] = nonce
        return dict(self.api.call("POST", "/v1/federation/submit", body))

    def fed_label(self, colony: str, label: str) -> JsonDict:
        """The current root of another colony's label that a held grant covers."""
        return dict(self.api.call("POST", "/v1/federation/label",
                                  {"colony": colony, "label": label}))

    def fed_capsule(self, colony: str, capsule_id: str) -> JsonDict:
        """A capsule submitted to colony `colony`: its record (receipt) as A's nodes see it."""
        return dict(self.api.call("GET", "/v1/federation/capsule", colony=colony, id=capsule_id))

    # ------------------------------------------------------------ events
    def send_event(self, name: str, payload: str = "") -> JsonDict:
        return dict(self.api.call("POST", "/v1/events/send", {"name": name, "payload": payload}))

    def events(self) -> JsonStream:
        """Follow the node's events until the caller stops iterating."""
        yield from self._with(FOLLOW_TIMEOUT_S).stream("GET", "/v1/events/watch")


    # ------------------------------------------------------------ topics
    def topic_publish(self, topic: str, data: bytes | str) -> JsonDict:
        """Sign and publish `data` (≤ ~60 KiB) to `topic`; {topic, id, seq, bytes}."""
        if isinstance(data, str):
            body: JsonDict = {"topic": topic, "data": data}
        else:
            body = {"topic": topic, "data": base64.b64encode(data).decode(), "base64": True}
        return dict(self.api.call("POST", "/v1/topics/publish", body))

    def topic_subscribe(self, topic: str, *, base64_data: bool = False) -> JsonStream:
        """Follow `topic` until the caller stops iterating. The first item is
        `{"subscribed": true, "topic"}` (the node is in the topic's swarm); then one
        item per message: {topic, id, publisher, epoch, seq, time, data, hop, gap, local}."""
        yield from self._with(FOLLOW_TIMEOUT_S).stream(
            "GET", "/v1/topics/subscribe", topic=topic, base64="1" if base64_data else None)

    def topics(self) -> list[JsonDict]:
        """Topics this node is in, with their views and counters."""
        return [dict(r) for r in self.api.call("GET", "/v1/topics")]


def all_match(have: dict[str, str], want: dict[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


def _drain(items: Iterator[Any], progress: ProgressFn | None) -> JsonDict:
    final: JsonDict = {}
    for item in items:
        final = item
        if progress is not None:
            progress(Progress.from_json(item))
    if not final.get("done"):
        raise ClientError(f"the stream ended before it was done: {final}")
    return final
