"""One end of a WebRTC data channel for tests that put the two ends in different
network namespaces; the SDP goes through files in a shared directory.

    python webrtc_turn_peer.py offer|answer DIR TURN_URL USER PASSWORD [STUN_URL ...]

Prints one JSON line: the nominated ICE pair's candidate types and whether 64 KiB
went through the channel and back unchanged.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from overlay.runtime.edge.webrtc_bridge import IceConfig, WebRtcEndpoint, open_bridge

PAYLOAD = bytes(range(256)) * 256


async def wait_file(path: Path, timeout_s: float = 30.0) -> str:
    with trio.fail_after(timeout_s):
        while not path.exists():
            await trio.sleep(0.05)
    return path.read_text()


async def publish(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)  # the other end never reads half a file


async def main(role: str, d: Path, url: str, user: str, password: str, *stun: str) -> None:
    ice = IceConfig(stun=stun, turn=(url,), turn_username=user, turn_password=password)
    async with open_bridge() as br:
        ep = WebRtcEndpoint(br, ice)
        if role == "offer":
            sdp, session = await ep.offer()
            await publish(d / "offer.sdp", sdp)
            await ep.complete(session, await wait_file(d / "answer.sdp"))
        else:
            sdp, session = await ep.answer(await wait_file(d / "offer.sdp"))
            await publish(d / "answer.sdp", sdp)
        stream = await session.wait_open(30.0)
        with trio.fail_after(30):
            got = b""
            if role == "offer":
                await stream.send_all(PAYLOAD)
            while len(got) < len(PAYLOAD):
                got += await stream.receive_some(65536)
            if role == "answer":
                await stream.send_all(got)
        if role == "answer":
            # Keep the channel open until the offer end has the echo and closes: over
            # TURN with 1 % loss, SCTP's retransmissions can take longer than the 1 s
            # this waited before, and closing dropped the rest (the offer end then
            # timed out; seen once, 2026-12-06).
            with trio.move_on_after(25), contextlib.suppress(trio.BrokenResourceError):
                # Until EOF: the offer end closed (or reset) the channel.
                while (await stream.receive_some(65536)) != b"":
                    continue
        print(json.dumps({"path": stream.path, "echoed": got == PAYLOAD}), flush=True)
        await stream.aclose()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], Path(sys.argv[2]), *sys.argv[3:])
