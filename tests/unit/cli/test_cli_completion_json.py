"""`colony completion` (static shtab scripts) and `--json` on the commands that print
data: run in-process on a real node home."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from overlay.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_bash_completion_completes_commands_and_subcommands(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, script = run(capsys, "completion", "bash")
    assert code == 0 and "_shtab_colony" in script
    if shutil.which("bash") is None:
        pytest.skip("no bash here to source the script")
    path = tmp_path / "colony.bash"
    path.write_text(script)

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        cmd = (f"source {path}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
               f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; _shtab_colony; "
               'printf "%s\\n" "${COMPREPLY[@]}"')
        out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True)
        return out.stdout.split()

    assert "capsule" in complete("colony", "caps")
    assert {"submit", "ps", "logs", "wait"} <= set(complete("colony", "capsule", "''"))
    assert "--json" in complete("colony", "add", "--j")


def test_zsh_and_tcsh_scripts_are_generated(capsys: pytest.CaptureFixture[str]) -> None:
    code, zsh = run(capsys, "completion", "zsh")
    assert code == 0 and zsh.startswith("#compdef colony") and "completion" in zsh
    code, tcsh = run(capsys, "completion", "tcsh")
    assert code == 0 and "complete colony" in tcsh


def test_json_on_init_add_pin_rm_and_block_rm(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    code, out = run(capsys, "--home", str(home), "init", "--json")
    node = json.loads(out)
    assert code == 0 and node["home"] == str(home) and node["id"].startswith("12D3KooW")
    f = tmp_path / "f.txt"
    f.write_text("json everywhere\n")
    code, out = run(capsys, "--home", str(home), "add", "--json", str(f))
    added = json.loads(out)
    assert code == 0 and len(added["roots"]) == 1
    root = added["roots"][0]
    code, out = run(capsys, "--home", str(home), "pin", "rm", "--json", root)
    assert code == 0 and json.loads(out) == [{"cid": root, "pinned": False, "names": []}]
    code, out = run(capsys, "--home", str(home), "block", "rm", "--json", root)
    assert code == 0 and json.loads(out) == [{"cid": root, "removed": True, "error": None}]
    code, out = run(capsys, "--home", str(home), "block", "rm", "--json", root)
    assert code == 1 and json.loads(out)[0]["error"] == "not_found"


def test_publish_and_fetch_progress_is_a_tqdm_bar_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from overlay.cli.cmd_daemon import _ProgressBar
    from overlay.client import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    with _ProgressBar("fetch") as bar:
        for n in (1024, 4096, 4096, 1 << 20):
            bar(Progress(False, n, {"providers": {"a": 1, "b": 2}}))
        assert bar.bar is not None and bar.bar.n == 1 << 20  # cumulative bytes → deltas
        assert bar.bar.postfix == "providers=2"
        bar.bar.refresh()
        bar(Progress(True, 1 << 20, {}))
    drawn = err.getvalue()
    assert "fetch" in drawn and "providers=2" in drawn and "1.00MB" in drawn, drawn
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: draws nothing
    with _ProgressBar("publish", 100) as quiet:
        quiet(Progress(False, 50, {}))
    assert quiet.bar is None
