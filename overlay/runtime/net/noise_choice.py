"""Which Noise suites this node offers: `[network] noise_cipher` and the CPU.

"auto" offers AES-256-GCM before libp2p's ChaCha20-Poly1305 `/noise` only where AES
is fast: a CPU with AES instructions (x86 AES-NI, the ARMv8 crypto extension) runs
AES-GCM ≈ 3.4× faster than ChaCha20-Poly1305 through pyca/cryptography (0.43 vs
1.48 CPU s/GiB on this EPYC); one without them (many ARM edge boards) runs it in
software, several times slower than ChaCha, which is built for exactly that case.
The answer is the kernel's CPU flags when /proc/cpuinfo lists them, else a short
measurement of both AEADs (a few ms, once per process).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from overlay.p2p import noise_cipher

CPUINFO = Path("/proc/cpuinfo")
#: AES-GCM must beat ChaCha20-Poly1305 by this factor in the fallback measurement:
#: a tie is not worth leaving the suite every libp2p peer speaks.
BENCH_MARGIN = 1.2


def cpu_flags(text: str) -> set[str] | None:
    """The feature flags of /proc/cpuinfo's text (x86 `flags`, ARM `Features`);
    None when it lists none (another architecture, a restricted container)."""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags or None


def _bench_s(aead: AESGCM | ChaCha20Poly1305, msg: bytes, out: memoryview) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(8):
            aead.encrypt_into(i.to_bytes(12, "big"), msg, None, out)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_aes_faster() -> bool:
    """AES-GCM vs ChaCha20-Poly1305 on 64 KiB messages, best of three rounds each."""
    msg = os.urandom(64 * 1024)
    out = memoryview(bytearray(len(msg) + noise_cipher.TAG_BYTES))
    key = os.urandom(32)
    aes = _bench_s(AESGCM(key), msg, out)
    chacha = _bench_s(ChaCha20Poly1305(key), msg, out)
    return aes * BENCH_MARGIN < chacha


@functools.cache
def aes_is_fast() -> bool:
    try:
        flags = cpu_flags(CPUINFO.read_text())
    except OSError:
        flags = None
    return "aes" in flags if flags is not None else measure_aes_faster()


def noise_suites(setting: str) -> tuple[noise_cipher.NoiseSuite, ...]:
    """The suites for `[network] noise_cipher` on this machine (offer order)."""
    return noise_cipher.suites_for(setting, aes_fast=setting == "auto" and aes_is_fast())
