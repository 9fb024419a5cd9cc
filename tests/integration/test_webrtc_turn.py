"""TURN as the configured fallback (`[edge] turn`): a data channel whose only
candidates are relayed ones, through a real coturn on 127.0.0.1.

Host candidates are stripped from both SDPs, so ICE can only pair the TURN
allocations: the channel opening proves allocation, permissions and the relayed
data path through coturn with the configured credentials; wrong credentials give
no relayed candidate at all.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from edge_stack import skip_without_host_candidates

from overlay.runtime.edge.webrtc_bridge import (
    IceConfig,
    WebRtcEndpoint,
    candidate_types,
    open_bridge,
)

pytestmark = pytest.mark.slow

USER, PASSWORD = "colony", "turn-test"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def turn_url(tmp_path: Path) -> Iterator[str]:
    skip_without_host_candidates()  # aioice talks to TURN from host-candidate sockets
    if shutil.which("turnserver") is None:
        pytest.skip("coturn's turnserver is not installed (make system-deps installs it)")
    port = free_udp_port()
    conf = tmp_path / "turnserver.conf"
    conf.write_text("\n".join([
        "listening-ip=127.0.0.1", f"listening-port={port}", "relay-ip=127.0.0.1",
        "min-port=52000", "max-port=52999", "realm=colony.test", "lt-cred-mech",
        f"user={USER}:{PASSWORD}", "fingerprint", "no-tls", "no-dtls", "no-cli",
        "allow-loopback-peers", f"log-file={tmp_path / 'turn.log'}", "simple-log",
        f"pidfile={tmp_path / 'turn.pid'}", "",
    ]))
    proc = subprocess.Popen(["turnserver", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield f"turn:127.0.0.1:{port}?transport=udp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def relay_only(sdp: str) -> str:
    lines = [ln for ln in sdp.splitlines()
             if not (ln.startswith("a=candidate:") and " typ relay" not in ln)]
    return "\r\n".join(lines) + "\r\n"


def test_data_channel_through_turn(turn_url: str) -> None:
    async def main() -> None:
        ice = IceConfig(turn=(turn_url,), turn_username=USER, turn_password=PASSWORD)
        async with open_bridge() as br:
            a, b = WebRtcEndpoint(br, ice), WebRtcEndpoint(br, ice)
            with trio.fail_after(30):
                offer, sa = None, None
                for _ in range(20):  # coturn may still be starting: retry the gathering
                    offer, sa = await a.offer()
                    if "relay" in candidate_types(offer):
                        break
                    await sa.close()
                    await trio.sleep(0.25)
                assert offer is not None and sa is not None
                assert "relay" in candidate_types(offer), candidate_types(offer)
                answer, sb = await b.answer(relay_only(offer))
                assert "relay" in candidate_types(answer)
                await a.complete(sa, relay_only(answer))
                async with trio.open_nursery() as n:
                    n.start_soon(sa.wait_open, 20.0)
                    n.start_soon(sb.wait_open, 20.0)
                assert sa.stream is not None and sb.stream is not None
                assert sa.stream.path == "relay->relay", sa.stream.path
                payload = bytes(range(256)) * 1024
                await sa.stream.send_all(payload)
                got = b""
                while len(got) < len(payload):
                    got += await sb.stream.receive_some(65536)
                assert got == payload
            # Wrong credentials: the allocation is refused, no relayed candidate.
            bad = WebRtcEndpoint(br, IceConfig(turn=(turn_url,), turn_username=USER,
                                               turn_password="wrong"))
            offer, s = await bad.offer()
            assert "relay" not in candidate_types(offer)
            await s.close()

    trio.run(main)
