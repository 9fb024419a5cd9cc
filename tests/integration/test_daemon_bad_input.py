"""A real daemon under hostile input: each abuse costs the abusing client only.

Two daemons on 127.0.0.1: the target (node 0, holding a small published file) and a
well-behaved peer (node 1). A test-process attacker with its own KeyPair, using
overlay.runtime.net.transport.Transport (and its py-libp2p host for raw streams), sends
random bytes to the libp2p port, garbage and oversized frames on the Colony
protocols, streams that never finish, 300 streams at once, and Bitswap blocks nobody
asked for or with a bogus CID prefix. Afterwards the target is still running, its API
answers, node 1 fetches the file from it byte-identical, unsolicited blocks were not
stored, and its RSS grew by less than a generous bound (a memory check, not timing).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from overlay.core.cid import from_block_prefix
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.core.multiformats import encode_varint
from overlay.exchange.messages import BitswapMessage, Block
from overlay.runtime.net.transport import Codec, Transport, TransportConfig, TransportError
from overlay.runtime.services.host_ad import PROTO_BITSWAP, PROTO_GOSSIP

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import Cluster, colony_cmd, deterministic_bytes, wait_for

# 300 s, the suite's default: in some runs each send after the first oversized frame
# waits out its 10 s timeout and the test takes ~170 s, close to 180 (not understood
# yet: docs/reliability.md, "Open").
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KAD = "/colony/kad/1.0.0"
RSS_GROWTH_BOUND_KIB = 100 * 1024
MANY_STREAMS = 300


def _pb_block(prefix: bytes, data: bytes) -> bytes:
    """Bitswap 1.2 `Message.payload` entry (field 3) built by hand."""
    body = (b"\x0a" + encode_varint(len(prefix)) + prefix
            + b"\x12" + encode_varint(len(data)) + data)
    return b"\x1a" + encode_varint(len(body)) + body


async def _attack(t: Transport, target: PeerId, addr: str, port: int) -> dict[str, Any]:
    out: dict[str, Any] = {"errors": 0}
    # 1. Random bytes straight at the TCP port (no multistream, no Noise).
    for i in range(20):
        with trio.fail_after(10):
            s = await trio.open_tcp_stream("127.0.0.1", port)
            with contextlib.suppress(trio.BrokenResourceError):
                await s.send_all(os.urandom(256 + 97 * i))
            await s.aclose()

    if True:  # the caller keeps `t` (and the streams below) open
        await t.connect(addr)

        async def try_send(proto: str, body: bytes) -> None:
            try:
                await t.send(target, proto, body, timeout=10)
            except TransportError:
                out["errors"] += 1

        # 2. Garbage on every Colony protocol, as raw length-prefixed frames.
        for proto in (PROTO_GOSSIP, PROTO_BITSWAP, KAD):
            t.codec_for(proto, Codec.RAW)
            for body in (b"\xff\xff\xff", b"\x82\x00", os.urandom(1000), b"\x00" * 50_000):
                await try_send(proto, body)
        try:
            with trio.fail_after(15):
                await t.request(target, KAD, os.urandom(300), timeout=10)
        except (TransportError, trio.TooSlowError):
            out["errors"] += 1

        # 3. Oversized frames (over the daemon's 4 MiB [network] max_frame_bytes).
        for proto in (PROTO_GOSSIP, PROTO_BITSWAP, KAD):
            await try_send(proto, b"\x00" * (8 * 1024 * 1024))

        # 4. Bitswap blocks nobody asked for (valid CIDs), and blocks whose CID prefix
        #    names no hash the node supports (the codec derives the CID from the bytes,
        #    so a mismatching CID is only expressible as a bogus prefix).
        unsolicited = [deterministic_bytes(256 * 1024, seed=1000 + i) for i in range(40)]
        for i in range(0, len(unsolicited), 4):
            msg = BitswapMessage(blocks=tuple(
                Block(from_block_prefix(b"\x01\x55\x12\x20", d), d) for d in unsolicited[i:i + 4]
            ))
            await try_send(PROTO_BITSWAP, msg.to_bytes())
        out["unsolicited"] = [from_block_prefix(b"\x01\x55\x12\x20", d) for d in unsolicited]
        for prefix in (b"\x01\x55\xee\x20", b"\x01\x55\x12\x05", b"\x07", b"\x01\x55\x00\x00"):
            await try_send(PROTO_BITSWAP, _pb_block(prefix, os.urandom(4096)))

        # 5. Streams that never finish, many at once: each announces a 1000-byte frame,
        #    writes 10 bytes, and stays open while the good client is served.
        streams = []
        out["stream_errors"] = []
        for i in range(MANY_STREAMS):
            proto = (PROTO_GOSSIP, PROTO_BITSWAP, KAD)[i % 3]
            for _attempt in range(2):
                try:
                    with trio.fail_after(10):
                        held = await t.open_stream(target, proto)
                        await held.send_all(encode_varint(1000) + b"x" * 10)
                    streams.append(held)
                    break
                except Exception as e:
                    out["stream_errors"].append(f"{type(e).__name__}: {e}")
                    with trio.fail_after(10):  # the target dropped us: dial afresh
                        await t.disconnect(target)
                        await t.connect(addr)
        out["open_streams"] = len(streams)
        out["streams"] = streams
        return out


def test_hostile_client_costs_only_itself(tmp_path: Path) -> None:
    data = tmp_path / "file.bin"
    data.write_bytes(deterministic_bytes(3 * 1024 * 1024 + 17, seed=3))
    with Cluster(tmp_path / "colony", 2) as c:
        target, good = c.nodes
        c.wait_converged(timeout=60)
        r = colony_cmd(target.home, "publish", str(data), "--json", timeout=60)
        root = json.loads(r.stdout)["cid"]
        blocks_before = target.api().call("GET", "/v1/stats")["store"]["blocks"]
        rss_before = target.rss_kib()

        report: dict[str, Any] = {}

        async def main() -> None:
            # The attack runs in this process; the good client runs as a real CLI
            # subprocess while the attacker's 300 half-written streams are held open.
            cfg = TransportConfig(max_frame_bytes=64 * 1024 * 1024)
            async with Transport.open(KeyPair.generate(), ["/ip4/127.0.0.1/tcp/0"], cfg) as t:
                tid = PeerId.from_base58(target.peer_id)
                report.update(await _attack(t, tid, target.addr, target.p2p_port))
                assert report["open_streams"] > 0, report["stream_errors"][:3]
                # While the streams hang open: the well-behaved peer is served.
                fetched = tmp_path / "fetched.bin"
                res = await trio.to_thread.run_sync(lambda: colony_cmd(
                    good.home, "fetch", root, "-o", str(fetched), "--json", timeout=90))
                report["fetch"] = json.loads(res.stdout)
                report["fetched_ok"] = fetched.read_bytes() == data.read_bytes()
                report["members_during"] = await trio.to_thread.run_sync(target.members)

        trio.run(main)

        print(f"attack: {report['errors']} sends refused, {report['open_streams']} "
              f"half-written streams held open; fetch providers {report['fetch']['providers']}")
        assert target.proc is not None and target.proc.poll() is None, "target daemon died"
        assert report["fetched_ok"]
        assert target.peer_id in report["fetch"]["providers"]
        assert {m["id"] for m in report["members_during"] if m["state"] == "alive"} == {
            target.peer_id, good.peer_id}
        # The attacker's connection is gone; the target still answers and lists members.
        wait_for(lambda: len(target.members()) == 2, 30, "target API after the attack")
        stats = target.api().call("GET", "/v1/stats")
        assert stats["store"]["blocks"] == blocks_before, "unsolicited blocks were stored"
        growth = target.rss_kib() - rss_before
        print(f"target RSS {rss_before} KiB -> {rss_before + growth} KiB")
        assert growth < RSS_GROWTH_BOUND_KIB, f"RSS grew by {growth} KiB"
