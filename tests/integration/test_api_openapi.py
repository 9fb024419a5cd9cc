"""The control API described by itself: /v1/openapi.json from real daemons, checked as
OpenAPI 3.1 and against the responses those daemons really give; bad input gets a
4xx with the one JSON error shape; the SDK and `colony connect` against them.

Two daemons started without bootstrap, so `colony connect` has something to do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from colony_cluster import Cluster, colony_cmd, deterministic_bytes, wait_for
from helpers.json_schema import check_openapi, errors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay.client import ApiCallFailed, BadRequest, Colony, NotFound, Progress

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("openapi"), 2)
    try:
        c.prepare()
        for node in c.nodes:
            node.start()  # no bootstrap: each starts alone
        for node in c.nodes:
            wait_for(node.up, 90, f"daemon {node.home.name}")
        yield c
    finally:
        c.close()


def _ok_schema(doc: dict[str, Any], method: str, path: str) -> tuple[dict[str, Any], bool]:
    ok = doc["paths"][path][method.lower()]["responses"]["200"]["content"]
    if "application/x-ndjson" in ok:
        return ok["application/x-ndjson"]["schema"], True
    return ok["application/json"]["schema"], False


def _check(doc: dict[str, Any], method: str, path: str, value: Any) -> None:
    schema, stream = _ok_schema(doc, method, path)
    for item in (value if stream else [value]):
        assert not errors(schema, item, doc), (method, path, errors(schema, item, doc))


def test_document_is_openapi_31_and_real_responses_match(pair: Cluster, tmp_path: Path) -> None:
    n0, n1 = pair.nodes
    doc = n0.api().call("GET", "/v1/openapi.json")
    assert check_openapi(doc) == []
    declared = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    for route in [("GET", "/v1/members"), ("POST", "/v1/publish"), ("POST", "/v1/fetch"),
                  ("POST", "/v1/capsules/submit"), ("GET", "/v1/capsules/wait"),
                  ("POST", "/v1/connect"), ("GET", "/v1/openapi.json"), ("GET", "/metrics")]:
        assert route in declared
    # every operation has a summary of its own, not the generic fallback
    assert all(op["summary"] != f"{m.upper()} {p}"
               for p, item in doc["paths"].items() for m, op in item.items())

    # connect the two lone daemons through the CLI, then read what they report
    r = colony_cmd(n1.home, "connect", n0.addr, "--json")
    assert r.returncode == 0, r.stderr
    _check(doc, "POST", "/v1/connect", json.loads(r.stdout))
    wait_for(lambda: n0.peer_id in n1.api().call("GET", "/v1/peers"), 30, "n1 connected")
    alive = json.loads(colony_cmd(n1.home, "members", "--status", "alive", "--json").stdout)
    assert n1.peer_id in {m["id"] for m in alive} and {m["state"] for m in alive} == {"alive"}
    r = colony_cmd(n1.home, "members", "--status", "alive", "--label", "site=x", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = colony_cmd(n1.home, "members", "--label", "nonsense", check=False)
    assert r.returncode != 0 and "KEY=VALUE" in r.stderr
    api = n1.api(60)
    for path in ["/v1/id", "/v1/members", "/v1/peers", "/v1/stats", "/v1/capsules",
                 "/v1/capsules/stats", "/v1/trust", "/v1/cells", "/v1/openapi.json"]:
        _check(doc, "GET", path, api.call("GET", path))
    _check(doc, "POST", "/v1/events/send",
           api.call("POST", "/v1/events/send", {"name": "t", "payload": "x"}))

    f = tmp_path / "data.bin"
    f.write_bytes(deterministic_bytes(600_000))
    pub = list(n0.api(60).stream("POST", "/v1/publish", {"path": str(f)}))
    _check(doc, "POST", "/v1/publish", pub)
    cid = pub[-1]["cid"]
    _check(doc, "POST", "/v1/dht/findprovs", api.call("POST", "/v1/dht/findprovs", {"cid": cid}))
    fetched = list(api.stream("POST", "/v1/fetch", {"cid": cid}))
    _check(doc, "POST", "/v1/fetch", fetched)
    assert fetched[-1]["done"] and fetched[-1]["bytes_fetched"] > 0

    # errors: the one shape, with stable codes, on the wire and as SDK exceptions
    for method, path, body in [("GET", "/v1/capsules/get?id=nope", None),
                               ("GET", "/v1/nowhere", None),
                               ("POST", "/v1/connect", {"addr": "/ip4/1.2.3.4"})]:
        try:
            api.call(method, path, body)
        except ApiCallFailed as e:
            assert e.code in ("bad_request", "not_found") and str(e)
        else:
            raise AssertionError(f"{method} {path} did not fail")


def test_sdk_against_a_real_daemon(pair: Cluster, tmp_path: Path) -> None:
    n0, n1 = pair.nodes
    c = Colony.for_home(n1.home, timeout_s=60)
    assert c.id().id == n1.peer_id
    me = [m for m in c.members() if m.is_self]
    assert len(me) == 1 and me[0].state == "alive"
    assert c.members(status="alive", labels={"site": "nowhere-at-all"}) == []
    f = tmp_path / "sdk.bin"
    f.write_bytes(deterministic_bytes(300_000, seed=7))
    seen: list[Progress] = []
    pub = Colony.for_home(n0.home).publish(f, progress=seen.append)
    assert seen[-1].done and pub.cid == seen[-1].raw["cid"] and pub.size == 300_000
    got = c.fetch(pub.cid)
    assert got.bytes_fetched + got.blocks_local > 0
    with pytest.raises(NotFound):
        c.capsule("bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    with pytest.raises(BadRequest):
        c.capsule("not-a-capsule-id")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                               max_size=3),
    max_leaves=8,
)


#: Examples per route; `make fuzz-api` runs many more (COLONY_FUZZ_EXAMPLES=500).
FUZZ_EXAMPLES = int(os.environ.get("COLONY_FUZZ_EXAMPLES", "20"))


def test_generated_bad_input_gets_json_4xx(pair: Cluster) -> None:
    """Bodies built from each declared request schema's property names, with values of
    any JSON type, plus bodies that are not objects: never a 5xx, always the error shape.
    Bounded: 20 examples per route. Left out: leave (stops the daemon), publish (imports
    whatever path it is given) and connect (a well-formed address is dialled)."""
    n0 = pair.nodes[0]
    api = n0.api(30)
    doc = api.call("GET", "/v1/openapi.json")
    skip = {"/v1/leave", "/v1/publish", "/v1/connect"}
    for path, item in doc["paths"].items():
        op = item.get("post")
        if op is None or path in skip or "requestBody" not in op:
            continue
        props = list(op["requestBody"]["content"]["application/json"]["schema"]
                     .get("properties", {}))
        bodies = st.dictionaries(st.sampled_from(props) if props else st.text(), _JSON,
                                 max_size=len(props) or 1) | _JSON
        _fuzz(api, path, bodies)


def test_out_of_range_numbers_are_refused_before_they_reach_a_core(pair: Cluster) -> None:
    """Found by the fuzz above in a suite run: `/v1/dht/put` with a negative `seq` built
    an invalid signed record, the DHT core refused it by raising (a local bug, which
    stops the daemon), and the daemon exited. The API now refuses it with 400."""
    api = pair.nodes[0].api(30)
    for seq in (-1, 1 << 63):
        with pytest.raises(ApiCallFailed) as e:
            api.call("POST", "/v1/dht/put", {"value": "x", "seq": seq})
        assert e.value.status == 400 and "seq must be in" in str(e.value)
    # A value whose record exceeds what the DHT's wire carries (64 KiB) was stored
    # locally and answered 200, though every peer would refuse the PUT_VALUE.
    with pytest.raises(ApiCallFailed) as e:
        api.call("POST", "/v1/dht/put", {"value": "x" * 70_000})
    assert e.value.status == 413 and "at most 65536" in str(e.value)
    assert api.call("POST", "/v1/dht/put", {"value": "x" * 60_000})["seq"] > 0
    assert api.call("GET", "/v1/id")  # still up


def _fuzz(api: Any, path: str, bodies: st.SearchStrategy[Any]) -> None:
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=bodies)
    def one(body: Any) -> None:
        try:
            api.call("POST", path, body)
        except ApiCallFailed as e:
            assert 400 <= e.status < 500, (path, body, e.status, str(e))
            assert e.code != "api_error" and str(e), (path, body)

    one()


def test_a_malformed_sync_label_is_the_callers_error(pair: Cluster) -> None:
    """Found by the fuzz above in a suite run: `/v1/sync/pull` with the label ":"
    answered 502 (as if the DHT had failed); a bad name is a 400, on every sync route."""
    api = pair.nodes[0].api(30)
    for method, path, body in (("POST", "/v1/sync/pull", {"label": ":", "dir": "/nonexistent/x"}),
                               ("POST", "/v1/sync/push", {"label": ":", "dir": "/"}),
                               ("GET", "/v1/sync/status?label=%3A", None)):
        with pytest.raises(ApiCallFailed) as e:
            api.call(method, path, body)
        assert e.value.status == 400 and "a label is" in str(e.value), (path, e.value)
