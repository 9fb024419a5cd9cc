"""What a human's browser gets from the gateway: a file's Content-Type and the HTML
listing of a directory.

Content-Type (PATH_GATEWAY.md "Content-Type"): from the name's extension with
Python's built-in table only (`mimetypes.MimeTypes()` without the host's
/etc/mime.types, so every host answers alike), else sniffed from the first bytes: a few
magic numbers, HTML by its opening tag, UTF-8 text without control characters as
`text/plain; charset=utf-8`, anything else `application/octet-stream`.

The listing (PATH_GATEWAY.md "Generated HTML with directory index") shows each
entry's name, CID and DAG size (`Tsize` from the directory block, so it costs no read
of the children however large the directory), with links relative to the directory's
URL (which ends in `/`). Every name is HTML-escaped and percent-encoded in links.
"""

from __future__ import annotations

import html
import mimetypes
from collections.abc import Sequence
from urllib.parse import quote

from overlay.runtime.gateway.dag import Entry

#: Bumped when the listing's HTML changes: it is part of the listing's ETag.
LISTING_VERSION = "1"
#: Bytes of a file read to sniff its type when its name says nothing.
SNIFF_BYTES = 512
_TYPES = mimetypes.MimeTypes()  # built-in table only: the host's files are not read

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"\x00asm", "application/wasm"),
    (b"OggS", "application/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"\x1aE\xdf\xa3", "video/webm"),
)
_TEXT_CONTROLS = set(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D, 0x1B}


def by_name(name: str) -> str | None:
    """The Content-Type the extension of `name` says, if any."""
    ctype, encoding = _TYPES.guess_type(name, strict=False)
    if ctype is None or encoding is not None:  # x.tar.gz is gzip bytes, not a tar
        return "application/gzip" if encoding == "gzip" else None
    if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        ctype += "; charset=utf-8"
    return ctype


def sniff(head: bytes) -> str:
    """The Content-Type of a file that starts with `head` (its first bytes)."""
    for magic, ctype in _MAGIC:
        if head.startswith(magic):
            return ctype
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut at the end
            return "application/octet-stream"
        text = head[: e.start].decode("utf-8")
    if any(ord(c) in _TEXT_CONTROLS for c in text):
        return "application/octet-stream"
    lead = text.lstrip()[:14].lower()
    if lead.startswith(("<!doctype html", "<html")):
        return "text/html; charset=utf-8"
    if lead.startswith("<svg") or (lead.startswith("<?xml") and "<svg" in text.lower()):
        return "image/svg+xml"
    return "text/plain; charset=utf-8"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def listing(url_path: str, cid: str, entries: Sequence[Entry]) -> bytes:
    """The HTML index of a directory served at `url_path` (which ends in `/`)."""
    title = html.escape(url_path)
    rows = []
    if url_path.rstrip("/").count("/") > 2:  # below /ipfs/CID: a parent to go up to
        rows.append('<tr><td><a href="../">..</a></td><td></td><td></td></tr>')
    for e in entries:
        name = html.escape(e.name)
        href = quote(e.name, safe="")
        ecid = html.escape(str(e.cid))
        rows.append(
            f'<tr><td><a href="{href}">{name}</a></td>'
            f'<td><a class="cid" href="/ipfs/{ecid}">{ecid}</a></td>'
            f'<td class="size">{human_size(e.tsize)}</td></tr>'
        )
    body = "\n".join(rows)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Index of {title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td{{padding:.2em 1em .2em 0}}.cid{{font-family:monospace;color:#666}}.size{{text-align:right}}
</style></head><body>
<h1>Index of {title}</h1>
<p>Directory <code>{html.escape(cid)}</code> &middot; {len(entries)} entries &middot;
<a href="?format=car">download as CAR</a></p>
<table><thead><tr><th>Name</th><th>CID</th><th>DAG size</th></tr></thead><tbody>
{body}
</tbody></table></body></html>
"""
    return page.encode()


__all__ = ["LISTING_VERSION", "SNIFF_BYTES", "by_name", "human_size", "listing", "sniff"]
