"""Grants on real homes: `colony grant issue|accept|ls|show|revoke` (CLI in process),
delegated grants, refusals with reasons, and the DHT's `/colony/grant/` validator."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time
from pathlib import Path

import pytest

from dht.grants import GRANT_PREFIX, grant_key
from dht.labels import default_validators
from overlay.cli.main import main as colony_main
from overlay.core.certs import Certificate
from overlay.core.crypto import KeyPair
from overlay.core.errors import ConfigError, ExpiredError, MalformedFrame
from overlay.core.grants import Grant, GrantToken
from overlay.core.wire import cbor_encode
from overlay.runtime.process.identity import KEY_FILE, load_identity
from overlay.runtime.services.grant_store import GrantStore, grant_status
from overlay.runtime.services.trust_state import Trust, colony_id

NOW = time.time()
ROOT = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def run(home: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = colony_main(["--home", str(home), *args])
    return rc, out.getvalue(), err.getvalue()


def colony(tmp: Path, name: str) -> tuple[Path, str]:
    home = tmp / name
    assert run(home, "init")[0] == 0
    rc, out, _ = run(home, "colony", "create", name, "--json")
    assert rc == 0
    return home, str(json.loads(out)["colony"])


def test_cli_issue_accept_ls_show_revoke(tmp_path: Path) -> None:
    ha, a_id = colony(tmp_path, "a")
    hb, b_id = colony(tmp_path, "b")
    rc, token, err = run(ha, "grant", "issue", b_id, "--roles", "read,submit", "--root", ROOT,
                         "--capsules", "5", "--cpu-s", "3600", "--expires", "7d",
                         "--bootstrap", "/ip4/127.0.0.1/tcp/9")  # fmt: skip
    assert rc == 0 and "read,submit" in err and "daemon not running" in err
    rc, out, _ = run(hb, "grant", "accept", token.strip(), "--json")
    row = json.loads(out)
    assert rc == 0 and row["colony"] == a_id and row["quota"] == {"capsules": 5, "cpu_s": 3600}
    assert row["addrs"] == ["/ip4/127.0.0.1/tcp/9"] and row["status"] == "valid"
    # A token whose grant was altered after signing is refused, naming why.
    tok = GrantToken.decode(token.strip())
    env = tok.grant.envelope
    forged_env = type(env)(env.kind, env.body.replace(b"read", b"exec"), env.signer,
                           env.signature)  # fmt: skip
    raw = cbor_encode({"g": forged_env.to_bytes(), "a": []})
    forged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    rc, _, err = run(hb, "grant", "accept", forged)
    assert rc == 1 and "signature on 'colony-grant' does not verify" in err, err
    # The grant is for b: a third colony cannot install it.
    hc, _ = colony(tmp_path, "c")
    rc, _, err = run(hc, "grant", "accept", token.strip())
    assert rc == 1 and "for another colony" in err
    rc, out, _ = run(ha, "grant", "ls")
    assert "given" in out and b_id in out and "valid" in out
    serial = row["serial"]
    rc, out, _ = run(hb, "grant", "show", serial[:10])
    assert rc == 0 and "(valid)" in out
    rc, out, _ = run(ha, "grant", "revoke", serial[:10])
    assert rc == 0 and "revoked grant" in out and "daemon not running" in out
    rc, out, _ = run(ha, "grant", "show", serial[:10], "--json")
    assert rc == 1 and json.loads(out)["status"] == "revoked"
    rc, _, err = run(hb, "grant", "revoke", serial[:10])
    assert rc == 1 and "no grant given by this colony" in err
    rc, _, err = run(ha, "grant", "issue", b_id, "--roles", "read")
    assert rc == 1 and "names DAG roots, a label prefix" in err
    rc, _, err = run(ha, "grant", "issue", "garbage", "--roles", "submit")
    assert rc == 1 and "not a colony id" in err


def test_delegates_with_admit_may_grant_plain_members_may_not(tmp_path: Path) -> None:
    ha, _ = colony(tmp_path, "a")
    _, b_id = colony(tmp_path, "b")
    for name, roles, ok in (("admin", "member,admit,submit", True),
                            ("plain", "member,submit", False)):
        home = tmp_path / name
        assert run(home, "init")[0] == 0
        kp = load_identity(home / KEY_FILE)
        rc, token, _ = run(ha, "cert", "issue", str(kp.peer_id), "--roles", roles,
                           "--expires", "10d", "--bootstrap", "/ip4/127.0.0.1/tcp/9")
        assert run(home, "join", token.strip())[0] == 0
        rc, out, err = run(home, "grant", "issue", b_id, "--roles", "submit", "--expires", "5d")
        if ok:
            g = GrantToken.decode(out.strip()).grant
            assert rc == 0 and len(g.chain) == 1 and g.issuer == kp.peer_id
        else:
            assert rc == 1 and "may not give grants: role admit not granted" in err
    rc, _, err = run(tmp_path / "admin", "grant", "issue", b_id, "--roles", "submit",
                     "--expires", "20d")  # fmt: skip
    assert rc == 1 and "must expire before its certificate" in err


def test_status_of_expired_and_foreign(tmp_path: Path) -> None:
    ha, _ = colony(tmp_path, "a")
    _, b_id = colony(tmp_path, "b")
    t = Trust(ha)
    kp = load_identity(ha / KEY_FILE)
    g = GrantStore(t).issue(kp, b_id, ["submit"], 60, NOW)
    assert grant_status(g, t, NOW) == "valid" and grant_status(g, t, NOW + 61) == "expired"
    assert GrantStore(t).find(b_id) == [g]


def test_grant_record_validator() -> None:
    a, b, admin, plain = (KeyPair(bytes([i]) * 32) for i in (1, 2, 3, 4))
    v = default_validators()
    g = Grant.issue(a, a.public.raw, b.public.raw, ["submit"], NOW - 10, NOW + 100)
    key = grant_key(a.public.raw, b.public.raw)
    assert key.startswith(GRANT_PREFIX) and str(colony_id(a.public.raw)).encode() in key
    rec = v.validate(key, g.to_bytes(), NOW)
    assert rec.payload == g.to_bytes()
    with pytest.raises(MalformedFrame, match="another pair"):
        v.validate(grant_key(b.public.raw, a.public.raw), g.to_bytes(), NOW)
    with pytest.raises(ExpiredError):
        v.validate(key, g.to_bytes(), NOW + 200)
    chain = (Certificate.issue(a, a.public, plain.peer_id, ["member"], NOW - 10, NOW + 50),)
    bad = Grant.issue(plain, a.public.raw, b.public.raw, ["submit"], NOW, NOW + 40, chain=chain)
    with pytest.raises(MalformedFrame, match="may not admit"):
        v.validate(key, bad.to_bytes(), NOW)
    ok_chain = (Certificate.issue(a, a.public, admin.peer_id, ["admit"], NOW - 10, NOW + 50),)
    newer = Grant.issue(admin, a.public.raw, b.public.raw, ["submit"], NOW, NOW + 40,
                        chain=ok_chain)  # fmt: skip
    rec2 = v.validate(key, newer.to_bytes(), NOW)
    assert v.better(rec, rec2) and not v.better(rec2, rec)


def test_federation_state_sessions_end_with_the_grant_and_are_bounded(tmp_path: Path) -> None:
    from overlay.runtime.services.federation_state import FederationState, held_for

    ha, _ = colony(tmp_path, "a")
    hb, b_id = colony(tmp_path, "b")
    t = Trust(ha)
    kp = load_identity(ha / KEY_FILE)
    g = GrantStore(t).issue(kp, b_id, ["submit"], 60, NOW)
    st = FederationState(t.dir, t)
    peers = [KeyPair(bytes([40 + i]) * 32).peer_id for i in range(3)]
    for p in peers:
        st.open_session(p, [g], {}, max_sessions=2, chain=t.own_chain)
    assert list(st.sessions) == peers[1:] == list(st.chains)  # the oldest forgotten
    alive = [True]
    assert st.live_grants(peers[2], NOW, lambda g, now: alive[0]) == [g]
    alive[0] = False  # revoked or expired: the session ends at its next use
    assert st.live_grants(peers[2], NOW, lambda g, now: alive[0]) == []
    assert peers[2] not in st.sessions and st.session_count() == 1
    # Outputs of another colony's run here are readable by its submitter only.
    st.note_run("cap1", peers[0])
    assert st.note_outputs("cap1", ["bafyout"]) == peers[0]
    assert st.note_outputs("other", ["bafyx"]) is None and st.outputs == {peers[0]: ["bafyout"]}
    st.ledger.charge_submit(g, "cap1", 5.0, NOW)
    st.save()
    assert FederationState(t.dir, t).ledger.usage(g.serial, NOW).capsules == 1
    # B side: the newest valid held grant from A, for a role.
    tb = Trust(hb)
    with pytest.raises(ConfigError, match="holds no valid grant"):
        held_for(GrantStore(tb), t.require_colony(), "submit", NOW)
    GrantStore(tb).accept(GrantToken(g), NOW)
    assert held_for(GrantStore(tb), t.require_colony(), "submit", NOW).grant == g
    with pytest.raises(ConfigError, match="giving read"):
        held_for(GrantStore(tb), t.require_colony(), "read", NOW)
