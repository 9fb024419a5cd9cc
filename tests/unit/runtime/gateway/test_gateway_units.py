"""The gateway's pure parts and its store reads, without a daemon: content
negotiation, ranges, entity-bytes, ETag matching, URL paths, Content-Type sniffing,
the listing's escaping, and range walks of real UnixFS files in a real BlockStore
(sizes checked, only the needed blocks read, a refusing policy obeyed)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlay.core.cid import Cid
from overlay.core.errors import ConfigError
from overlay.runtime.gateway import present
from overlay.runtime.gateway.dag import (
    Entry,
    NotServed,
    file_bytes,
    resolve_path,
    serve_all,
    walk_file,
)
from overlay.runtime.gateway.handler import Planner
from overlay.runtime.gateway.httpserver import HttpRequest
from overlay.runtime.gateway.request import (
    HttpError,
    byte_range,
    content_path,
    entity_bytes,
    etag_matches,
    negotiate,
    query,
    resolve_entity_bytes,
)
from overlay.runtime.gateway.service import GatewayConfig
from store.blockstore import BlockStore
from store.importer import Importer, ImportOptions
from store.paths import parse_path

CAR = "application/vnd.ipld.car"
RAW = "application/vnd.ipld.raw"


@pytest.mark.parametrize(("fmt", "accept", "kind", "dups"), [
    (None, None, "plain", False),
    (None, "text/html,*/*;q=0.8", "plain", False),
    (None, RAW, "raw", False),
    (None, f"{CAR}; version=1; order=dfs; dups=y", "car", True),
    (None, f"{CAR};order=unk", "car", False),
    (None, f"text/html;q=0.5, {RAW};q=0.9", "raw", False),
    (None, f"{CAR};version=2, {RAW};q=0.1", "raw", False),  # the first is not produced
    ("raw", "text/html", "raw", False),  # format wins over Accept
    ("car", None, "car", False),
])
def test_negotiate(fmt: str | None, accept: str | None, kind: str, dups: bool) -> None:
    q = {} if fmt is None else {"format": fmt}
    got = negotiate(q, accept)
    assert got.kind == kind and got.car.dups == dups


@pytest.mark.parametrize(("q", "accept", "status"), [
    ({"format": "tar"}, None, 406),
    ({"format": "nope"}, None, 400),
    ({}, "application/x-tar", 406),
    ({}, f"{CAR};version=2", 406),
    ({}, f"{CAR};order=weird", 406),
    ({"format": "car", "dag-scope": "most"}, None, 400),
    ({"format": "car", "entity-bytes": "5"}, None, 400),
    ({}, "text/html;q=0", 406),
])
def test_negotiate_refusals(q: dict[str, str], accept: str | None, status: int) -> None:
    with pytest.raises(HttpError) as e:
        negotiate(q, accept)
    assert e.value.status == status and str(e.value)


def test_car_params_from_query() -> None:
    got = negotiate({"format": "car", "dag-scope": "block", "car-dups": "y"}, None)
    assert (got.car.scope, got.car.dups) == ("block", True)
    eb = negotiate({"format": "car", "entity-bytes": "10:-1"}, None).car
    assert eb.scope == "entity" and eb.entity_bytes == (10, -1)


@pytest.mark.parametrize(("header", "size", "want"), [
    (None, 100, None),
    ("bytes=0-9", 100, (0, 10)),
    ("bytes=90-", 100, (90, 100)),
    ("bytes=-10", 100, (90, 100)),
    ("bytes=-1000", 100, (0, 100)),
    ("bytes=50-99999999999", 100, (50, 100)),
    ("bytes=0-1,5-6", 100, None),  # several ranges: the whole content
    ("items=0-1", 100, None),  # another unit: ignored
])
def test_byte_range(header: str | None, size: int, want: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == want


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=5-2", "bytes=x-3", "bytes=",
                                    "bytes=-0", "bytes=1-2-3", "bytes=" + "9" * 40 + "-"])
def test_byte_range_refused(header: str) -> None:
    with pytest.raises(HttpError) as e:
        byte_range(header, 100)
    assert e.value.status == 416 and ("content-range", "bytes */100") in e.value.headers


@pytest.mark.parametrize(("text", "size", "want"), [
    ("0:*", 100, (0, 100)), ("0:9", 100, (0, 10)), ("-10:*", 100, (90, 100)),
    ("10:-11", 100, (10, 90)), ("50:1000", 100, (50, 100)), ("-500:*", 100, (0, 100)),
])
def test_entity_bytes(text: str, size: int, want: tuple[int, int]) -> None:
    assert resolve_entity_bytes(entity_bytes(text), size) == want


def test_entity_bytes_outside_is_400() -> None:
    with pytest.raises(HttpError) as e:
        resolve_entity_bytes(entity_bytes("200:*"), 100)
    assert e.value.status == 400


def test_etag_matching() -> None:
    assert etag_matches('"a", "b"', '"b"')
    assert etag_matches('W/"b"', '"b"') and etag_matches("*", '"x"')
    assert not etag_matches('"a"', '"b"') and not etag_matches(None, '"b"')


def test_content_path_decodes_after_checking() -> None:
    cid = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
    assert content_path(f"/ipfs/{cid}/a%20b/c%26d/").segments == ("a b", "c&d")
    for bad in (f"/ipfs/{cid}/%2e%2e/x", f"/ipfs/{cid}/a%2Fb", f"/ipfs/{cid}/../x",
                f"/ipfs/{cid}/%ff", f"/ipfs/{cid}/a%00", "/ipfs/nope", f"/ipfs/{cid}//x"):
        with pytest.raises(HttpError) as e:
            content_path(bad)
        assert e.value.status == 400, bad


def test_query_refuses_repeats() -> None:
    assert query("format=raw&x=") == {"format": "raw", "x": ""}
    with pytest.raises(HttpError):
        query("format=raw&format=car")


@pytest.mark.parametrize(("head", "want"), [
    (b"\x89PNG\r\n\x1a\n....", "image/png"),
    (b"%PDF-1.7", "application/pdf"),
    (b"  <!DOCTYPE html><p>", "text/html; charset=utf-8"),
    (b"plain words\n", "text/plain; charset=utf-8"),
    ("héllo".encode()[:2], "text/plain; charset=utf-8"),  # a character cut at the end
    (b"\x00\x01\x02binary", "application/octet-stream"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'>", "image/svg+xml"),
])
def test_sniff(head: bytes, want: str) -> None:
    assert present.sniff(head) == want


def test_by_name() -> None:
    assert present.by_name("a.html") == "text/html; charset=utf-8"
    assert present.by_name("x.png") == "image/png"
    assert present.by_name("noext") is None


def test_listing_escapes_names() -> None:
    cid = Cid.parse("bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am")
    page = present.listing("/ipfs/x/", str(cid), [Entry('<b>"q"&.txt', cid, 5)]).decode()
    assert "&lt;b&gt;&quot;q&quot;&amp;.txt" in page and "<b>" not in page
    assert 'href="%3Cb%3E%22q%22%26.txt"' in page


# ---------------------------------------------------------------- store reads


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[BlockStore]:
    s = BlockStore(tmp_path / "blocks")
    yield s
    s.close()


def _add(store: BlockStore, data: bytes, version: int = 1) -> Cid:
    # Small chunks and 4 links per node: a file of a few KiB is a three-level DAG.
    return Importer(store, ImportOptions(cid_version=version, chunk_size=1024,
                                         max_links=4)).add_bytes(data).cid


@pytest.mark.parametrize("version", [0, 1])  # dag-pb leaves with Data; raw leaves
def test_walk_file_ranges_read_only_what_they_need(store: BlockStore, version: int) -> None:
    data = random.Random(1).randbytes(20_000)
    root = _add(store, data, version)
    whole = list(walk_file(store, root, 0, len(data), serve_all))
    assert b"".join(bytes(p) for _, _, p in whole) == data
    rng = random.Random(2)
    for _ in range(40):
        lo = rng.randrange(len(data))
        hi = rng.randrange(lo, len(data) + 1)
        got = b"".join(bytes(p) for p in file_bytes(store, root, lo, hi, serve_all))
        assert got == data[lo:hi], (lo, hi)
    few = list(walk_file(store, root, 0, 10, serve_all))
    assert len(few) < len(whole) // 3  # one leaf and the nodes above it


def test_policy_refuses_blocks_below_the_root(store: BlockStore) -> None:
    data = random.Random(3).randbytes(5_000)
    root = _add(store, data)
    leaves = [c for c, _, _ in walk_file(store, root, 0, len(data), serve_all)
              if c.codec == 0x55]

    def policy(cid: Cid) -> None:
        if cid == leaves[2]:
            raise NotServed(cid)

    with pytest.raises(NotServed):
        b"".join(bytes(p) for p in file_bytes(store, root, 0, len(data), policy))
    # A range that does not touch the refused leaf is served.
    assert b"".join(bytes(p) for p in file_bytes(store, root, 0, 100, policy)) == data[:100]


def test_planner_answers_without_a_daemon(store: BlockStore, tmp_path: Path) -> None:
    src = tmp_path / "d"
    src.mkdir()
    (src / "f.txt").write_bytes(b"x" * 3000)
    root = Importer(store, ImportOptions(cid_version=1)).add_path(src, recursive=True).cid
    r = resolve_path(store, parse_path(f"{root}/f.txt"), serve_all)
    assert r.roots[0] == root and len(r.path_blocks) == 1
    plan = Planner(store, serve_all).plan
    rep = plan(HttpRequest("GET", f"/ipfs/{root}/f.txt", "", {"range": "bytes=10-19"}))
    assert rep.status == 206 and rep.length == 10 and rep.stream is not None
    assert b"".join(bytes(p) for p in rep.stream()) == b"x" * 10

    def refuse(cid: Cid) -> None:
        raise NotServed(cid)

    for path in (f"/ipfs/{root}/f.txt", f"/ipfs/{root}/"):
        rep = Planner(store, refuse).plan(HttpRequest("GET", path, "format=car", {}))
        assert rep.status == 404 and b"not available" in rep.body


@pytest.mark.parametrize("listen", ["8080", "localhost:", ":8080", "h:99999", "h:x"])
def test_gateway_config_refuses_a_bad_listen(listen: str) -> None:
    conf = {"gateway": {"listen": listen, "fetch": False, "fetch_timeout_s": 30,
                        "max_connections": 64}}
    with pytest.raises(ConfigError, match="HOST:PORT"):
        GatewayConfig.from_config(conf)
    conf["gateway"]["listen"] = "127.0.0.1:8080"
    assert GatewayConfig.from_config(conf).listen == "127.0.0.1:8080"
