"""Identity key file and layered configuration."""

import os
from pathlib import Path

import pytest

from overlay.core.crypto import KeyPair
from overlay.core.errors import ConfigError
from overlay.runtime.process import config as cfg
from overlay.runtime.process.identity import load_identity, write_identity


def test_identity_roundtrip_and_mode(tmp_path: Path) -> None:
    kp = KeyPair.generate()
    path = tmp_path / "identity.key"
    write_identity(path, kp)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_identity(path).peer_id == kp.peer_id


def test_identity_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    write_identity(path, KeyPair.generate())
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_identity(path)


def test_identity_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="colony init"):
        load_identity(tmp_path / "nope")
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"\x08\x01\x12\x40" + bytes(64))
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError, match="corrupt"):
        load_identity(bad)


def test_config_layers(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[api]\nlisten = "127.0.0.1:6000"\n')
    conf = cfg.load(tmp_path, env={"COLONY_NETWORK_BOOTSTRAP": "/ip4/1.2.3.4/tcp/1,/x"})
    assert conf["api"]["listen"] == "127.0.0.1:6000"
    assert conf["network"]["bootstrap"] == ["/ip4/1.2.3.4/tcp/1", "/x"]
    assert conf["dht"]["k"] == 20


def test_template_parses_to_defaults(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(cfg.TEMPLATE)
    assert cfg.load(tmp_path, env={}) == cfg.DEFAULTS


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[nope]\n", "unknown section"),
        ("[api]\nport = 1\n", "unknown key 'port'"),
        ("[dht]\nk = 'twenty'\n", r"\[dht\] k must be an integer"),
        ("[cell]\nhold_s = 'soon'\n", r"\[cell\] hold_s must be a number"),
        ("[cell]\nhold_s = true\n", r"\[cell\] hold_s must be a number"),
        ("[api\n", "config.toml"),
    ],
)
def test_config_errors_name_the_problem(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        cfg.load(tmp_path, env={})


def test_env_type_error_names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COLONY_DHT_K"):
        cfg.load(tmp_path, env={"COLONY_DHT_K": "many"})


def test_number_keys_take_integers_and_the_environment(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[cell]\nhold_s = 5\ncap = 40\n")
    conf = cfg.load(tmp_path, env={"COLONY_CELL_CHECK_INTERVAL_S": "0.5"})
    assert conf["cell"]["hold_s"] == 5.0 and isinstance(conf["cell"]["hold_s"], float)
    assert conf["cell"]["check_interval_s"] == 0.5 and conf["cell"]["cap"] == 40
    with pytest.raises(ConfigError, match="COLONY_CELL_HOLD_S"):
        cfg.load(tmp_path, env={"COLONY_CELL_HOLD_S": "later"})
