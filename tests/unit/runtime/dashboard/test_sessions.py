"""Dashboard sessions (overlay/runtime/dashboard/sessions.py): lifetime, bound, cookie
parsing and the CSRF rule; and the shipped pages: every module a page imports exists."""

from __future__ import annotations

import re

from overlay.runtime.dashboard import sessions as ss
from overlay.runtime.dashboard.routes import PREFIX, load_static


def test_a_session_lives_its_ttl_then_reads_as_expired() -> None:
    store = ss.SessionStore(ttl_s=10.0)
    s = store.create(now=100.0)
    assert len(s.sid) == 64 and s.expires == 110.0
    assert store.check([s.sid], 109.9) is ss.Check.OK
    assert store.check([s.sid], 110.0) is ss.Check.EXPIRED
    assert store.check([], 110.0) is ss.Check.NONE
    assert store.stats["expired"] == 1 and len(store) == 0


def test_unknown_or_dropped_ids_are_expired_and_any_live_one_is_enough() -> None:
    store = ss.SessionStore()
    a, b = store.create(0.0), store.create(0.0)
    assert store.check(["f" * 64], 1.0) is ss.Check.EXPIRED  # e.g. a restarted daemon
    store.drop([a.sid])
    assert store.check([a.sid], 1.0) is ss.Check.EXPIRED
    assert store.check([a.sid, b.sid], 1.0) is ss.Check.OK


def test_logins_are_bounded_oldest_evicted_first() -> None:
    store = ss.SessionStore(max_sessions=3)
    made = [store.create(float(i)) for i in range(5)]
    assert len(store) == 3 and store.stats["evicted"] == 2
    assert store.check([made[0].sid], 5.0) is ss.Check.EXPIRED
    assert all(store.check([m.sid], 5.0) is ss.Check.OK for m in made[2:])


def test_cookie_header_parsing_and_names() -> None:
    hdr = "theme=dark; colony_session_5101=abc; colony_session_6000=def ;x=1; colony_session="
    assert ss.session_ids(hdr) == ["abc", "def"]
    assert ss.session_ids("") == []
    assert ss.cookie_name("127.0.0.1:5101") == "colony_session_5101"
    assert ss.cookie_name("localhost") == "colony_session"
    c = ss.set_cookie("colony_session_1", "abc", 3600)
    assert "HttpOnly" in c and "SameSite=Strict" in c and "Max-Age=3600" in c
    assert "Max-Age=0" in ss.clear_cookie("colony_session_1")


def test_csrf_rule_for_cookie_calls() -> None:
    host = {"host": "127.0.0.1:5101"}
    assert ss.csrf_problem("GET", host) == ""  # reads need nothing more
    assert "x-colony-csrf" in ss.csrf_problem("POST", host)
    assert ss.csrf_problem("POST", {**host, "x-colony-csrf": "1"}) == ""
    same = {**host, "x-colony-csrf": "1", "origin": "http://127.0.0.1:5101"}
    assert ss.csrf_problem("POST", same) == ""
    other = {**same, "origin": "http://127.0.0.1:8000"}  # another local port: same *site*
    assert "not this API's" in ss.csrf_problem("POST", other)


def test_every_page_module_import_is_shipped() -> None:
    files = load_static()
    assert PREFIX in files and PREFIX + "login.html" in files
    js = {p: body.decode() for p, (body, ctype) in files.items() if p.endswith(".js")}
    assert len(js) >= 9
    for path, text in js.items():
        base = path.rsplit("/", 1)[0]
        for target in re.findall(r"^import .* from '(\.[^']+)';", text, re.M):
            parts = (base + "/" + target).split("/")
            resolved: list[str] = []
            for p in parts:
                if p == "..":
                    resolved.pop()
                elif p != ".":
                    resolved.append(p)
            assert "/".join(resolved) in files, f"{path} imports {target}: not shipped"
    for page in ("index.html", "login.html"):
        html = files[PREFIX + page][0].decode()
        for src in re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', html):
            assert src in files, f"{page} loads {src}: not shipped"
