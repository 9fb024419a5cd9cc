"""overlay/runtime/services/trust_state.py and the `colony colony|cert|join` commands, on real homes
(temp dirs, real key files), plus the DHT's `/colony/revoke/` validator."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import stat
import time
from pathlib import Path
from typing import NoReturn

import pytest

from dht.records import REVOKE_PREFIX, Validators, revoke_key
from overlay.cli.main import main as colony_main
from overlay.core.certs import Certificate, JoinToken, Revocation
from overlay.core.crypto import KeyPair
from overlay.core.errors import BadSignature, ConfigError, ExpiredError
from overlay.runtime.process.identity import KEY_FILE, load_identity
from overlay.runtime.services.trust_state import (
    Trust,
    capsule_authority,
    colony_id,
    load_token,
    parse_colony_id,
    parse_duration,
    serial,
)

NOW = time.time()


def run(home: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = colony_main(["--home", str(home), *args])
    return rc, out.getvalue(), err.getvalue()


def node(tmp: Path, name: str) -> tuple[Path, KeyPair]:
    home = tmp / name
    rc, _, err = run(home, "init")
    assert rc == 0, err
    return home, load_identity(home / KEY_FILE)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("2w", 14 * 86400),
     ("10", 10), ("1.5h", 5400)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "-1d", "3y", "d", "1 2d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(text)


def test_open_mode_without_colony(tmp_path: Path) -> None:
    home, kp = node(tmp_path, "a")
    t = Trust(home)
    assert not t.enabled and t.admission is None and t.own_chain == ()
    assert t.check(kp.peer_id, "submit", NOW) is None  # open mode allows everything
    assert capsule_authority(home, {}) == (None, ())
    with pytest.raises(ConfigError, match="not in a colony"):
        t.require_colony()


def test_create_colony_stores_owner_key_0600_and_certifies_this_node(tmp_path: Path) -> None:
    home, kp = node(tmp_path, "a")
    t = Trust.create_colony(home, "lab", kp, NOW, 86400)
    owner_file = home / "trust" / "owner.key"
    assert stat.S_IMODE(owner_file.stat().st_mode) == 0o600
    assert t.enabled and t.owner_key is not None
    assert colony_id(t.require_colony()) == t.owner_key.peer_id
    assert parse_colony_id(str(colony_id(t.require_colony()))) == t.require_colony()
    leaf = t.own_chain[-1]
    assert leaf.subject == kp.peer_id and set(leaf.roles) == {"admit", "execute", "member",
                                                              "submit"}  # fmt: skip
    again = Trust(home)  # reloads from disk
    assert again.own_chain == t.own_chain and again.name == "lab"
    assert again.check(kp.peer_id, "admit", NOW) is None
    assert capsule_authority(home, {}) == (t.require_colony(), t.own_chain)
    with pytest.raises(ConfigError, match="already in colony"):
        Trust.create_colony(home, "other", kp, NOW, 86400)


def test_issue_join_and_delegation_rules(tmp_path: Path) -> None:
    ha, ka = node(tmp_path, "a")
    hb, kb = node(tmp_path, "b")
    hc, kc = node(tmp_path, "c")
    owner_side = Trust.create_colony(ha, "lab", ka, NOW, 100 * 86400)
    chain_b = owner_side.issue(ka, kb.peer_id, ["admit", "member"], 10 * 86400, NOW)
    token = owner_side.token_for(chain_b, ["/ip4/127.0.0.1/tcp/1/p2p/" + str(ka.peer_id)])
    tb = Trust.join(hb, JoinToken.decode(token), kb, NOW)
    assert tb.own_chain == chain_b and tb.bootstrap and tb.owner_key is None
    # b delegates to c: shorter expiry, a subset of its roles, chain of two.
    chain_c = tb.issue(kb, kc.peer_id, ["member"], 86400, NOW)
    assert len(chain_c) == 2 and chain_c[0] == chain_b[0]
    with pytest.raises(ConfigError, match="expire before its delegator"):
        tb.issue(kb, kc.peer_id, ["member"], 20 * 86400, NOW)
    with pytest.raises(ConfigError, match="cannot grant submit"):
        tb.issue(kb, kc.peer_id, ["submit"], 86400, NOW)
    with pytest.raises(ConfigError, match="unknown role"):
        tb.issue(kb, kc.peer_id, ["root"], 86400, NOW)
    # c cannot admit: its certificate lacks `admit`.
    tc = Trust.join(hc, JoinToken(tb.require_colony(), chain_c, ()), kc, NOW)
    with pytest.raises(ConfigError, match="may not admit"):
        tc.issue(kc, ka.peer_id, ["member"], 3600, NOW)
    # A token for b cannot be installed on c.
    with pytest.raises(ConfigError, match="does not admit this node"):
        Trust.join(hc, JoinToken.decode(token), kc, NOW, force=True)


def test_revoke_persists_and_is_enforced_by_check(tmp_path: Path) -> None:
    ha, ka = node(tmp_path, "a")
    _, kb = node(tmp_path, "b")
    t = Trust.create_colony(ha, "lab", ka, NOW, 100 * 86400)
    chain_b = t.issue(ka, kb.peer_id, ["member"], 86400, NOW)
    assert t.learn(kb.peer_id, chain_b, NOW) is None
    assert t.check(kb.peer_id, "member", NOW) is None
    assert t.find_issued(str(kb.peer_id)) == [chain_b[-1]]
    assert t.find_issued(serial(chain_b[-1])[:10]) == [chain_b[-1]]
    assert t.check(kb.peer_id, "member", NOW + 1) is None  # cached verdict
    t.revoke(ka, chain_b[-1], NOW)
    reason = t.check(kb.peer_id, "member", NOW + 1)  # the revocation beats the cache
    assert reason is not None and "revoked" in reason
    expired = t.check(ka.peer_id, "member", NOW + 101 * 86400)  # and so does expiry
    assert expired is not None and "expired" in expired
    reloaded = Trust(ha)
    assert len(reloaded.saved_revocations()) == 1
    assert reloaded.revocations is not None and reloaded.revocations.revokers(
        chain_b[-1].cert_id)  # fmt: skip
    assert "revoked" in (reloaded.learn(kb.peer_id, chain_b, NOW) or "")


def test_corrupt_trust_files_give_clear_errors(tmp_path: Path) -> None:
    ha, ka = node(tmp_path, "a")
    Trust.create_colony(ha, "lab", ka, NOW, 86400)
    (ha / "trust" / "chain.cbor").write_bytes(b"\xff\x00junk")
    with pytest.raises(ConfigError, match=r"chain\.cbor is corrupt"):
        Trust(ha)
    (ha / "trust" / "colony.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"colony\.json is corrupt"):
        Trust(ha)


def test_load_token_from_file_or_inline_and_garbage(tmp_path: Path) -> None:
    ha, ka = node(tmp_path, "a")
    t = Trust.create_colony(ha, "lab", ka, NOW, 86400)
    tok = t.token_for(t.own_chain, [])
    f = tmp_path / "tok"
    f.write_text(tok + "\n")
    assert load_token(str(f)) == load_token(tok)
    with pytest.raises(ConfigError, match="not a valid join token"):
        load_token("bm90IGEgdG9rZW4")


# ---------------------------------------------------------------- the CLI


def test_cli_walkthrough_create_issue_join_show_revoke(tmp_path: Path) -> None:
    ha, _ = node(tmp_path, "a")
    hb, kb = node(tmp_path, "b")
    rc, out, _ = run(ha, "colony", "create", "lab", "--json")
    assert rc == 0 and json.loads(out)["colony"].startswith("12D3Koo")
    rc, token, err = run(ha, "cert", "issue", str(kb.peer_id), "--roles", "member,submit",
                         "--expires", "7d", "--bootstrap", "/ip4/127.0.0.1/tcp/9")  # fmt: skip
    assert rc == 0 and "roles member,submit" in err
    rc, out, _ = run(hb, "join", token.strip())
    assert rc == 0 and "joined colony" in out and "1 address" in out
    rc, out, _ = run(hb, "cert", "show")
    assert rc == 0 and "1 link(s), valid" in out
    rc, out, _ = run(ha, "cert", "ls", "--json")
    rows = json.loads(out)
    assert {r["kind"] for r in rows} == {"own chain", "issued"}
    rc, out, _ = run(ha, "cert", "revoke", str(kb.peer_id))
    assert rc == 0 and "revoked certificate" in out and "daemon not running" in out
    rc, out, _ = run(ha, "cert", "ls")
    assert "revoked" in out
    rc, out, _ = run(ha, "colony", "status")
    assert rc == 0 and "colony 'lab'" in out


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    ha, _ = node(tmp_path, "a")
    rc, _, err = run(ha, "cert", "issue", str(KeyPair(b"\x09" * 32).peer_id))
    assert rc == 1 and "not in a colony" in err
    run(ha, "colony", "create", "lab")
    rc, _, err = run(ha, "cert", "issue", "not-a-peer")
    assert rc == 1 and "not a peer id" in err
    rc, _, err = run(ha, "cert", "revoke", "abcdef")
    assert rc == 1 and "no certificate issued here matches" in err
    rc, _, err = run(ha, "join", "garbage")
    assert rc == 1 and "not a valid join token" in err
    rc, out, _ = run(tmp_path / "none", "colony", "status")
    assert rc == 0 and "open mode" in out


# ---------------------------------------------------------------- DHT validator


def test_revoke_record_validator() -> None:
    owner, other = KeyPair(b"\x01" * 32), KeyPair(b"\x02" * 32)
    cert = Certificate.issue(owner, owner.public, other.peer_id, ["member"], NOW - 1, NOW + 100)
    rev = Revocation.issue(owner, cert, NOW)
    v = Validators()
    key = revoke_key(cert.cert_id)
    assert key.startswith(REVOKE_PREFIX)
    rec = v.validate(key, rev.envelope.to_bytes(), NOW)
    assert rec.expires == cert.expires
    other_cert = Certificate.issue(owner, owner.public, owner.peer_id, ["member"], NOW - 1,
                                   NOW + 100)  # fmt: skip
    with pytest.raises(BadSignature, match="another certificate"):
        v.validate(revoke_key(other_cert.cert_id), rev.envelope.to_bytes(), NOW)
    with pytest.raises(ExpiredError):
        v.validate(key, rev.envelope.to_bytes(), NOW + 200)
    forged = rev.envelope.to_bytes()[:-1] + bytes([rev.envelope.to_bytes()[-1] ^ 1])
    with pytest.raises(BadSignature):
        v.validate(key, forged, NOW)
    later = Revocation.issue(other, cert, NOW + 5)
    recs = [v.validate(key, later.envelope.to_bytes(), NOW), rec]
    assert v.for_key(key).select(key, recs) == 1  # the earliest issued wins


# ---------------------------------------------------------------- private data


def test_private_dag_blocks_are_stripped_from_outsiders_wants(tmp_path: Path) -> None:
    from overlay.core.cid import Cid
    from overlay.exchange.messages import BitswapMessage, WantEntry
    from overlay.runtime.services.trust import strip_private_wants
    from overlay.runtime.services.trust_state import private_multihashes
    from store.blockstore import BlockStore
    from store.importer import Importer, ImportOptions

    with BlockStore(tmp_path / "s") as store:
        imp = Importer(store, ImportOptions(cid_version=1, chunk_size=1024))
        # 5 KiB of distinct chunks: a root and 5 leaves
        secret = imp.add_bytes(hashlib.shake_256(b"secret").digest(5 * 1024))
        public = imp.add_bytes(b"public data " * 200)
        private = private_multihashes(store, [str(secret.cid), "not-a-cid"])
        assert secret.cid.multihash in private and len(private) == 6
        assert public.cid.multihash not in private
        with store.reader() as r:
            leaves = [bytes(c) for c in r.links(secret.cid.multihash) or []]
    wants = (
        WantEntry(secret.cid.to_bytes()),
        WantEntry(leaves[0]),
        WantEntry(leaves[1], cancel=True),  # cancels always pass
        WantEntry(public.cid.to_bytes()),
        WantEntry(b"\x01junk"),  # unparsable: left for the exchange core to refuse
    )
    kept = strip_private_wants(BitswapMessage(wants=wants), private)
    assert [w.cid for w in kept.wants] == [leaves[1], public.cid.to_bytes(), b"\x01junk"]
    assert Cid.from_bytes(kept.wants[1].cid) == public.cid
    assert strip_private_wants(BitswapMessage(wants=wants), set()).wants == wants


HELLO = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"  # `hello\n` as CIDv0 (DESIGN §4)


def test_private_roots_persist_and_need_a_colony(tmp_path: Path) -> None:
    ha, ka = node(tmp_path, "a")
    with pytest.raises(ConfigError, match="not in a colony"):
        Trust(ha).set_private(HELLO, True)
    t = Trust.create_colony(ha, "lab", ka, NOW, 86400)
    assert t.set_private(HELLO, True) == [HELLO]
    assert Trust(ha).private_roots() == [HELLO]
    assert t.set_private(HELLO, False) == []
    rc, out, _ = run(ha, "colony", "private", HELLO)
    assert rc == 0 and "daemon not running" in out
    rc, out, _ = run(ha, "colony", "private")
    assert out.split() == [HELLO]


@pytest.mark.parametrize("serve_public", [True, False])
def test_bitswap_policy_members_outsiders_and_serve_public(
    tmp_path: Path, serve_public: bool
) -> None:
    """`TrustService.filter_bitswap` on a real home and LMDB store; the service's
    other interfaces are real too (a driver over a gossip core, gossip's membership)
    and the DHT is one that is never reached."""
    import random

    from gossip.swim import Swim
    from overlay.exchange.messages import BitswapMessage, WantEntry
    from overlay.runtime.driver import Driver
    from overlay.runtime.services.membership import SwimMembership
    from overlay.runtime.services.trust import TrustService
    from store.blockstore import BlockStore
    from store.importer import Importer

    class NoDht:
        async def call(self, make: object, timeout_s: float = 60.0) -> NoReturn:
            raise AssertionError("filter_bitswap needs no DHT")

    ha, ka = node(tmp_path, "a")
    _, kb = node(tmp_path, "b")
    outsider = KeyPair(b"\x33" * 32).peer_id
    t = Trust.create_colony(ha, "lab", ka, NOW, 86400)
    chain_b = t.issue(ka, kb.peer_id, ["member"], 3600, NOW)
    with BlockStore(tmp_path / "s") as store:
        imp = Importer(store)
        secret = imp.add_bytes(b"members only")
        public = imp.add_bytes(b"anyone")
        t.set_private(str(secret.cid), True)
        trust = Trust(ha, {"trust": {"serve_public": serve_public}})
        assert trust.learn(kb.peer_id, chain_b, time.time()) is None
        swim = Swim(ka, rng=random.Random(1))
        svc = TrustService(trust, me=ka.peer_id, store=store, membership=SwimMembership(swim),
                           cores=Driver(swim, send=lambda peer, msg: None),
                           dht=NoDht())  # fmt: skip
    msg = BitswapMessage(wants=(WantEntry(secret.cid.to_bytes()), WantEntry(public.cid.to_bytes())))
    assert svc.filter_bitswap(kb.peer_id, msg) is msg  # a member gets everything
    out = svc.filter_bitswap(outsider, msg)
    if serve_public:
        assert out is not None and [w.cid for w in out.wants] == [public.cid.to_bytes()]
    else:
        assert out is None  # outsiders get nothing at all
