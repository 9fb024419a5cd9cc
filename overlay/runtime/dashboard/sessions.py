"""Dashboard sessions: the HttpOnly cookie a browser gets for the API token.

A browser logs in once with the API token (POST /dashboard/login); the daemon answers
with a random session id in a cookie that scripts cannot read (`HttpOnly`) and that
no other site's page makes the browser send (`SameSite=Strict`). The token itself
never travels in a URL and is not stored by the browser.

Invariants:
- a session id is 32 random bytes (hex), known only in this daemon's memory: a
  restarted daemon has no sessions (the page says "log in again");
- a session lives `SESSION_TTL_S` from its login; at most `MAX_SESSIONS` live at
  once (the oldest goes first), so logins cannot grow memory without bound;
- a request authenticated by the cookie that may change state (any method but GET
  and HEAD) must carry `X-Colony-CSRF: 1` and, when the browser sends `Origin`, an
  origin equal to its `Host`: a page of another origin cannot set that header
  without a CORS preflight, which this API never grants. Cookies do not separate
  ports (127.0.0.1:5101 and 127.0.0.1:8000 are the same site), so SameSite alone
  would not stop a page served by another local port.

`now` is passed in (monotonic seconds); nothing here reads a clock.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

#: How long a login lasts.
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 64
COOKIE_PREFIX = "colony_session"
CSRF_HEADER = "x-colony-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD"})


class Check(Enum):
    OK = "ok"
    NONE = "none"  # no session cookie at all
    EXPIRED = "expired"  # a cookie this daemon no longer (or never) knew


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    expires: float


class SessionStore:
    """Live sessions by id, oldest first."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._live: OrderedDict[str, Session] = OrderedDict()
        self.stats = {"logins": 0, "expired": 0, "evicted": 0}

    def __len__(self) -> int:
        return len(self._live)

    def create(self, now: float) -> Session:
        self._expire(now)
        while len(self._live) >= self.max_sessions:
            self._live.popitem(last=False)
            self.stats["evicted"] += 1
        s = Session(secrets.token_hex(32), now + self.ttl_s)
        self._live[s.sid] = s
        self.stats["logins"] += 1
        return s

    def check(self, sids: list[str], now: float) -> Check:
        """OK when any of `sids` is a live session; EXPIRED when some cookie was
        given but none is live; NONE when no cookie was given."""
        if not sids:
            return Check.NONE
        self._expire(now)
        return Check.OK if any(s in self._live for s in sids) else Check.EXPIRED

    def drop(self, sids: list[str]) -> None:
        for s in sids:
            self._live.pop(s, None)

    def _expire(self, now: float) -> None:
        while self._live:
            oldest = next(iter(self._live.values()))
            if oldest.expires > now:
                return
            self._live.popitem(last=False)
            self.stats["expired"] += 1


def session_ids(cookie_header: str) -> list[str]:
    """The values of every `colony_session…` cookie in a Cookie header."""
    out = []
    for part in cookie_header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name.startswith(COOKIE_PREFIX) and value:
            out.append(value.strip())
    return out


def cookie_name(host_header: str) -> str:
    """One cookie name per API port, so logins to two daemons on one host coexist."""
    port = host_header.rpartition(":")[2]
    return f"{COOKIE_PREFIX}_{port}" if port.isdigit() else COOKIE_PREFIX


def set_cookie(name: str, sid: str, max_age_s: float) -> str:
    return (f"{name}={sid}; Path=/; Max-Age={int(max_age_s)}; HttpOnly; SameSite=Strict")


def clear_cookie(name: str) -> str:
    return f"{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"


def csrf_problem(method: str, headers: dict[str, str]) -> str:
    """Why a cookie-authenticated request may not change state ("" when it may)."""
    if method in SAFE_METHODS:
        return ""
    if headers.get(CSRF_HEADER) != "1":
        return f"a state-changing call with the session cookie needs the {CSRF_HEADER} header"
    origin = headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != headers.get("host", ""):
        return f"origin {origin} is not this API's"
    return ""
