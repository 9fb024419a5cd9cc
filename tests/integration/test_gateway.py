"""The trustless HTTP gateway of a real daemon, driven by `curl` and by
`@helia/verified-fetch` from npm (docs/gateway.md).

One daemon in colony mode (it founds a colony, so it has a policy to apply) with
`[gateway] listen` set through the environment. A directory (a text file, a 1.3 MB
file of six chunks, a page, a sub-directory with an index.html) and two more files
are added; one of those is marked private. `curl` checks raw blocks (hash-checked
here), CARs (byte-identical to `colony dag export`, and CARs of paths imported into
a fresh store and read back), files with Range, HEAD and 304, directory listings and
redirects, every refusal with its status and reason, and that the private DAG is
never served. helia's verified-fetch (installed by npm into
tests/integration/js_gateway, git-ignored node_modules, skipped only when node/npm
are missing or the install fails) gets a file and a file by directory path from the
gateway, verifying every block, byte-identical.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import Cluster, Node, colony_cmd, deterministic_bytes, wait_for

from overlay.client import ApiCallFailed, AsyncColony, BadRequest, Colony, Conflict, NotFound
from overlay.core.cid import Cid
from overlay.runtime.net.ports import free_port
from store.blockstore import BlockStore
from store.car import import_car
from store.exporter import Exporter
from store.paths import parse_path, resolve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
JS_DIR = Path(__file__).parent / "js_gateway"
IMMUTABLE = "public, max-age=29030400, immutable"
MAX_CONNECTIONS = 16


@dataclass
class Site:
    node: Node
    url: str
    root: str
    src: Path
    secret: str
    public: str
    tmp: Path


@dataclass
class Got:
    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    tmp = tmp_path_factory.mktemp("gw")
    port = free_port()
    c = Cluster(tmp / "c", 1, env={"COLONY_GATEWAY_LISTEN": f"127.0.0.1:{port}",
                                   "COLONY_GATEWAY_MAX_CONNECTIONS": str(MAX_CONNECTIONS)})
    try:
        c.prepare()
        n0 = c.nodes[0]
        colony_cmd(n0.home, "colony", "create", "lab")
        c.launch()
        src = tmp / "site"
        (src / "sub").mkdir(parents=True)
        (src / "www").mkdir()
        (src / "hello.txt").write_bytes(b"hello\n")
        (src / "sub" / "big.bin").write_bytes(deterministic_bytes(1_300_000, seed=3))
        (src / "sub" / "page").write_bytes(b"<!DOCTYPE html><p>no extension</p>\n")
        (src / "www" / "index.html").write_bytes(b"<h1>index</h1>\n")
        (src / "a b&<c>.txt").write_bytes(b"odd name\n")
        root = colony_cmd(n0.home, "add", "-r", "-Q", str(src)).stdout.strip()
        (tmp / "secret.bin").write_bytes(deterministic_bytes(300_000, seed=4))
        (tmp / "public.bin").write_bytes(deterministic_bytes(300_000, seed=5))
        secret = colony_cmd(n0.home, "add", "-Q", str(tmp / "secret.bin")).stdout.strip()
        public = colony_cmd(n0.home, "add", "-Q", str(tmp / "public.bin")).stdout.strip()
        colony_cmd(n0.home, "colony", "private", secret)
        yield Site(n0, f"http://127.0.0.1:{port}", root, src, secret, public, tmp)
    finally:
        c.close()


def curl(site: Site, path: str, *args: str) -> Got:
    hdr, body = site.tmp / "h.txt", site.tmp / "b.bin"
    body.unlink(missing_ok=True)  # curl writes no file for an empty body
    r = subprocess.run(["curl", "-s", "-g", "--path-as-is", "-D", str(hdr), "-o", str(body),
                        *args, site.url + path], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = hdr.read_text("latin-1").splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
    return Got(status, headers, body.read_bytes() if body.exists() else b"")


def test_raw_block(site: Site) -> None:
    for args, q in (((), "?format=raw"), (("-H", "Accept: application/vnd.ipld.raw"), "")):
        g = curl(site, f"/ipfs/{site.root}{q}", *args)
        assert g.status == 200
        assert Cid.parse(site.root).verify(g.body)  # the directory's own block
        assert g.headers["content-type"] == "application/vnd.ipld.raw"
        assert g.headers["etag"] == f'"{site.root}.raw"'
        assert g.headers["cache-control"] == IMMUTABLE
        assert g.headers["x-content-type-options"] == "nosniff"
        assert g.headers["content-disposition"] == f'attachment; filename="{site.root}.bin"'
    assert g.headers["content-location"] == f"/ipfs/{site.root}?format=raw"
    # A path names the block at its end; a Range of a block is served too.
    g = curl(site, f"/ipfs/{site.root}/hello.txt?format=raw", "-r", "1-3")
    assert (g.status, g.body, g.headers["content-range"]) == (206, b"ell", "bytes 1-3/6")
    # The trustless gateway probe: the empty identity CID.
    assert curl(site, "/ipfs/bafkqaaa?format=raw").status == 200


def _import(site: Site, car: bytes, name: str) -> BlockStore:
    (site.tmp / name).write_bytes(car)
    store = BlockStore(site.tmp / f"store-{name}")
    with open(site.tmp / name, "rb") as f:
        import_car(store, f)  # verifies every block against its CID
    return store


def test_car(site: Site) -> None:
    g = curl(site, f"/ipfs/{site.root}", "-H", "Accept: application/vnd.ipld.car")
    assert g.status == 200
    assert g.headers["content-type"] == "application/vnd.ipld.car; version=1; order=dfs; dups=n"
    assert g.headers["x-ipfs-roots"] == site.root
    exported = site.tmp / "export.car"
    colony_cmd(site.node.home, "dag", "export", site.root, "-o", str(exported))
    assert g.body == exported.read_bytes()  # same order, same blocks: byte-identical
    # A path: the blocks that walk it, then the file (dag-scope=entity).
    g = curl(site, f"/ipfs/{site.root}/sub/big.bin?format=car&dag-scope=entity")
    assert g.status == 200 and "transfer-encoding" in g.headers
    store = _import(site, g.body, "entity.car")
    target = resolve_in(store, f"{site.root}/sub/big.bin")
    assert Exporter(store).read_all(target) == (site.src / "sub" / "big.bin").read_bytes()
    # dag-scope=block: the path's blocks and the file's root only (no leaf).
    g = curl(site, f"/ipfs/{site.root}/sub/big.bin?format=car&dag-scope=block")
    store = _import(site, g.body, "block.car")
    assert store.stat().blocks == 3  # root dir, sub, big.bin's root node
    # entity-bytes: only the first leaf is needed for the first 1000 bytes.
    g = curl(site, f"/ipfs/{site.root}/sub/big.bin?format=car&entity-bytes=0:999")
    assert _import(site, g.body, "eb.car").stat().blocks == 4
    # The same request names the same ETag; If-None-Match answers 304.
    g2 = curl(site, f"/ipfs/{site.root}/sub/big.bin?format=car&entity-bytes=0:999",
              "-H", f"If-None-Match: {g.headers['etag']}")
    assert g2.status == 304 and g2.body == b""


def resolve_in(store: BlockStore, text: str) -> Cid:
    with store.reader() as r:
        return resolve(r, parse_path(text))


def test_files_range_head_304(site: Site) -> None:
    big = (site.src / "sub" / "big.bin").read_bytes()
    g = curl(site, f"/ipfs/{site.root}/hello.txt")
    assert (g.status, g.body) == (200, b"hello\n")
    assert g.headers["content-type"] == "text/plain; charset=utf-8"
    hello_cid = g.headers["etag"].strip('"')
    assert g.headers["x-ipfs-roots"] == f"{site.root},{hello_cid}"
    assert g.headers["x-ipfs-path"] == f"/ipfs/{site.root}/hello.txt"
    assert g.headers["cache-control"] == IMMUTABLE
    g = curl(site, f"/ipfs/{site.root}/sub/big.bin")
    assert g.body == big and g.headers["content-type"] == "application/octet-stream"
    assert curl(site, f"/ipfs/{site.root}/sub/page").headers["content-type"].startswith(
        "text/html")  # sniffed: the name has no extension
    assert curl(site, f"/ipfs/{site.root}/a%20b%26%3Cc%3E.txt").body == b"odd name\n"
    # Ranges across chunk boundaries (256 KiB leaves), a suffix, an open end.
    for spec, lo, hi in (("262000-600000", 262000, 600001), ("-100", len(big) - 100,
                         len(big)), ("1299990-", 1299990, len(big))):
        g = curl(site, f"/ipfs/{site.root}/sub/big.bin", "-r", spec)
        assert g.status == 206 and g.body == big[lo:hi], spec
        assert g.headers["content-range"] == f"bytes {lo}-{hi - 1}/{len(big)}"
    g = curl(site, f"/ipfs/{site.root}/sub/big.bin", "-r", "2000000-2000100")
    assert g.status == 416 and g.headers["content-range"] == f"bytes */{len(big)}"
    assert b"past the end" in g.body
    assert curl(site, f"/ipfs/{site.root}/sub/big.bin", "-r", "9-3").status == 416
    g = curl(site, f"/ipfs/{site.root}/sub/big.bin", "-I")  # curl -I prints the head only
    assert g.status == 200 and g.body.endswith(b"\r\n\r\n") and len(g.body) < 1000
    assert g.headers["content-length"] == str(len(big))
    etag = g.headers["etag"]
    g = curl(site, f"/ipfs/{site.root}/sub/big.bin", "-H", f"If-None-Match: W/{etag}")
    assert g.status == 304 and g.body == b"" and g.headers["etag"] == etag


def test_directories(site: Site) -> None:
    g = curl(site, f"/ipfs/{site.root}")
    assert g.status == 301 and g.headers["location"] == f"/ipfs/{site.root}/"
    g = curl(site, f"/ipfs/{site.root}/")
    assert g.status == 200 and g.headers["content-type"] == "text/html; charset=utf-8"
    page = g.body.decode()
    for href in ('href="hello.txt"', 'href="sub"', 'href="a%20b%26%3Cc%3E.txt"'):
        assert href in page
    assert "a b&amp;&lt;c&gt;.txt" in page and "<c>" not in page  # escaped
    assert g.headers["etag"].startswith('"DirIndex-')
    assert curl(site, f"/ipfs/{site.root}/", "-H",
                f"If-None-Match: {g.headers['etag']}").status == 304
    g = curl(site, f"/ipfs/{site.root}/www/")
    assert g.body == b"<h1>index</h1>\n" and g.headers["content-type"].startswith("text/html")


def test_refusals(site: Site) -> None:
    r = site.root
    cases = [
        ("/ipfs/notacid", (), 400, "invalid CID"),
        (f"/ipfs/{r}/%2e%2e/x", (), 400, "percent-encoded"),
        (f"/ipfs/{r}/sub/../hello.txt", (), 400, "no relative paths"),
        (f"/ipfs/{r}//hello.txt", (), 400, "empty segment"),
        (f"/ipfs/{r}/nope.txt", (), 404, "no entry nope.txt"),
        (f"/ipfs/{r}/hello.txt/x", (), 404, "is a file, not a directory"),
        ("/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", (), 404,
         "not available"),
        (f"/ipfs/{r}/", ("-H", "Accept: application/x-tar"), 406, "not produced"),
        (f"/ipfs/{r}/?format=tar", (), 406, "not produced"),
        (f"/ipfs/{r}/?format=bogus", (), 400, "unknown format"),
        (f"/ipfs/{r}/?format=car&dag-scope=most", (), 400, "dag-scope"),
        (f"/ipfs/{r}/", ("-H", "Accept: application/vnd.ipld.car; version=2"), 406,
         "version=1"),
        (f"/ipfs/{r}/", ("-X", "DELETE"), 405, "read-only"),
        ("/ipns/example.org", (), 501, "/ipns/"),
        ("/elsewhere", (), 404, "expected /ipfs/"),
    ]
    for path, args, status, reason in cases:
        g = curl(site, path, *args)
        assert g.status == status and reason in g.body.decode(), (path, g.status, g.body)
    g = curl(site, f"/ipfs/{r}/", "-X", "POST", "--data", "x")
    assert g.status == 413


def test_private_dag_is_never_served(site: Site) -> None:
    assert curl(site, f"/ipfs/{site.public}").body == (site.tmp / "public.bin").read_bytes()
    for q in ("", "?format=raw", "?format=car"):
        g = curl(site, f"/ipfs/{site.secret}{q}")
        assert g.status == 404 and b"not available from this gateway" in g.body, q
        assert not g.body.startswith(b"\x3a\xa2")  # no CAR header either
    # only-if-cached answers a private root as it answers a missing one (412).
    missing = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    for cid in (site.secret, missing):
        assert curl(site, f"/ipfs/{cid}", "-H", "Cache-Control: only-if-cached").status == 412
    assert curl(site, f"/ipfs/{site.public}", "-H", "Cache-Control: only-if-cached").status == 200


@pytest.fixture(scope="module")
def verified_fetch() -> list[str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not installed: cannot run @helia/verified-fetch")
    if not (JS_DIR / "node_modules" / "@helia" / "verified-fetch").is_dir():
        try:
            r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                               cwd=JS_DIR, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip("npm install of @helia/verified-fetch timed out (offline?)")
        if r.returncode != 0:
            pytest.skip(f"npm install of @helia/verified-fetch failed: {r.stderr[-500:]}")
    return [node, str(JS_DIR / "fetch.mjs")]


def test_helia_verified_fetch(site: Site, verified_fetch: list[str]) -> None:
    out = site.tmp / "js"
    out.mkdir()
    urls = [f"ipfs://{site.public}", f"ipfs://{site.root}/sub/big.bin",
            f"ipfs://{site.root}/hello.txt"]
    r = subprocess.run([*verified_fetch, site.url, str(out), *urls],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    got = [json.loads(ln) for ln in r.stdout.splitlines()]
    want = [(site.tmp / "public.bin").read_bytes(), (site.src / "sub" / "big.bin").read_bytes(),
            b"hello\n"]
    assert [g["status"] for g in got] == [200, 200, 200]
    for g, data in zip(got, want, strict=True):
        assert Path(g["out"]).read_bytes() == data, g["url"]


def test_api_cat_ls_get(site: Site) -> None:
    """The control API's cat/ls/get by path, through the SDK (the owner reads all)."""
    colony = Colony.for_home(site.node.home)
    big = (site.src / "sub" / "big.bin").read_bytes()
    assert b"".join(colony.cat(f"{site.root}/sub/big.bin")) == big
    assert b"".join(colony.cat(f"/ipfs/{site.root}/sub/big.bin", offset=262140,
                               length=10)) == big[262140:262150]
    assert b"".join(colony.cat(site.secret)) == (site.tmp / "secret.bin").read_bytes()
    listing = colony.ls(f"{site.root}/sub")
    assert listing["kind"] == "directory"
    page = (site.src / "sub" / "page").read_bytes()
    assert {(e["name"], e["kind"], e["size"]) for e in listing["entries"]} == {
        ("big.bin", "file", len(big)), ("page", "file", len(page))}
    assert colony.ls(f"{site.root}/hello.txt")["entries"] == []
    final = colony.get(f"{site.root}/sub", site.tmp / "got")
    assert final["done"] and final["kind"] == "directory"
    assert (site.tmp / "got" / "big.bin").read_bytes() == big
    with pytest.raises(NotFound, match="no entry nope"):
        b"".join(colony.cat(f"{site.root}/nope"))
    with pytest.raises(BadRequest, match="relative"):
        colony.ls(f"{site.root}/sub/..")
    with pytest.raises(BadRequest, match="is a directory"):
        b"".join(colony.cat(site.root))
    with pytest.raises(Conflict, match="already exists"):
        colony.get(site.root, site.tmp / "got")

    # A bad path given to publish is an error line in the stream; the daemon stays up
    # (it used to stop: the import's error left its nursery as an exception group).
    with pytest.raises(ApiCallFailed, match="no such file"):
        colony.publish(site.tmp / "does-not-exist")
    assert colony.id().id == site.node.peer_id

    async def async_twin() -> None:
        ac = AsyncColony.for_home(site.node.home)
        assert b"".join([p async for p in ac.cat(f"{site.root}/sub/big.bin")]) == big
        assert (await ac.ls(site.root))["cid"] == site.root

    trio.run(async_twin)


def test_a_stalled_client_costs_only_its_connection(site: Site) -> None:
    """A client that asks for a large file and stops reading holds no store
    transaction: other requests (and a block write) go on while it sits there."""
    port = int(site.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /ipfs/{site.root}/sub/big.bin HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(12) == b"HTTP/1.1 200"
        for _ in range(3):
            assert curl(site, f"/ipfs/{site.root}/hello.txt").body == b"hello\n"
        (site.tmp / "more.bin").write_bytes(deterministic_bytes(400_000, seed=9))
        added = colony_cmd(site.node.home, "add", "-Q", str(site.tmp / "more.bin"))
        assert curl(site, f"/ipfs/{added.stdout.strip()}").body == (
            site.tmp / "more.bin").read_bytes()
    metrics = site.node.api().call("GET", "/metrics").decode()
    assert 'colony_gateway_total{kind="requests"}' in metrics


def test_connections_over_the_limit_get_503(site: Site) -> None:
    port = int(site.url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
    try:
        # The server accepts in the background: wait until every slot is taken.
        wait_for(lambda: curl(site, "/ipfs/bafkqaaa").status == 503, 10, "a 503")
        g = curl(site, "/ipfs/bafkqaaa")
        assert g.status == 503 and g.headers["retry-after"] == "1"
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: curl(site, "/ipfs/bafkqaaa").status == 200, 10, "a free slot")


def test_fetch_on_miss(tmp_path: Path) -> None:
    """`[gateway] fetch = true`: a root not stored here is fetched from the colony
    first (then served, and kept); one nobody has is a 504 after fetch_timeout_s."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    c = Cluster(tmp_path / "c", 2)
    try:
        c.prepare()
        n0, n1 = c.nodes
        n0.start()
        wait_for(n0.up, 60, "n0")
        port = free_port()
        n1.start([n0.addr], env={"COLONY_GATEWAY_LISTEN": f"127.0.0.1:{port}",
                                 "COLONY_GATEWAY_FETCH": "true",
                                 "COLONY_GATEWAY_FETCH_TIMEOUT_S": "4"})
        wait_for(n1.up, 60, "n1")
        c.wait_converged(timeout=30)
        data = deterministic_bytes(700_000, seed=11)
        (tmp_path / "f.bin").write_bytes(data)
        cid = json.loads(colony_cmd(n0.home, "publish", str(tmp_path / "f.bin"), "--json",
                                    timeout=60).stdout)["cid"]
        site = Site(n1, f"http://127.0.0.1:{port}", cid, tmp_path, "", "", tmp_path)
        g = curl(site, f"/ipfs/{cid}")
        assert g.status == 200 and g.body == data
        assert b"".join(Colony.for_home(n1.home).cat(cid)) == data  # kept on n1
        nobody = "/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
        assert curl(site, nobody, "-H", "Cache-Control: only-if-cached").status == 412
        g = curl(site, nobody)
        # 504 when the fetch is still waiting at 4 s; 502 if the exchange gave up first.
        assert (g.status, g.body[:20]) in ((504, b"fetching bafkreigh2"),
                                           (502, b"could not fetch bafk")), g
        assert curl(site, f"/ipfs/{cid}", "-H", "Cache-Control: only-if-cached").status == 200
    finally:
        c.close()
