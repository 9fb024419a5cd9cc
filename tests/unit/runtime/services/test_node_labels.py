"""Node labels changed at runtime (overlay/runtime/services/node_labels.py): the rules a
change must pass (the gossip ad's limits), the labels.json round trip and what a broken
file says, and the executor taking the new labels (the capsule part's Relabel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from overlay.capsule.executor import Executor, ExecutorConfig
from overlay.capsule.members import MemberView
from overlay.capsule.spec import Conditions
from overlay.core.crypto import KeyPair
from overlay.core.errors import ConfigError
from overlay.runtime.services.node_labels import (
    LABELS_FILE,
    changed,
    save_labels,
    stored_labels,
)


def test_set_then_delete_sorted() -> None:
    assert changed((("a", "1"),), {"b": "2", "a": "3"}, ["zz"]) == (("a", "3"), ("b", "2"))
    assert changed((("a", "1"), ("b", "2")), {}, ["a"]) == (("b", "2"),)
    assert changed((("a", "1"),), {"a": "2"}, ["a"]) == ()  # delete wins, as documented


@pytest.mark.parametrize("set_, rule", [
    ({"": "x"}, "non-empty"),
    ({" k": "x"}, "surrounding spaces"),
    ({"a=b": "x"}, "without '='"),
    ({"k": "v" * 257}, "at most 256"),
    ({"k" * 257: "v"}, "at most 256"),
    ({f"k{i}": "v" for i in range(65)}, "at most 64 labels"),
    ({"k": 3}, "labels are strings"),
])
def test_refused_changes_name_the_rule(set_: dict[str, object], rule: str) -> None:
    with pytest.raises(ConfigError, match=rule):
        changed((), set_, ())  # type: ignore[arg-type]


def test_saved_labels_round_trip_and_replace_atomically(tmp_path: Path) -> None:
    assert stored_labels(tmp_path) is None  # never changed: config.toml decides
    save_labels(tmp_path, (("site", "lab"),))
    save_labels(tmp_path, (("rack", "7"), ("site", "lab")))
    assert stored_labels(tmp_path) == (("rack", "7"), ("site", "lab"))
    assert [p.name for p in tmp_path.iterdir()] == [LABELS_FILE]  # no temp file left
    save_labels(tmp_path, ())
    assert stored_labels(tmp_path) == ()  # all deleted is not "never changed"


@pytest.mark.parametrize("text, says", [
    ("{", "not readable as JSON"),
    ("[1]", "JSON object"),
    ('{"a=b": "1"}', "without '='"),
])
def test_a_broken_file_is_an_error_naming_it(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / LABELS_FILE).write_text(text)
    with pytest.raises(ConfigError, match=says) as e:
        stored_labels(tmp_path)
    assert LABELS_FILE in str(e.value)


def test_executor_checks_offers_against_new_labels() -> None:
    kp = KeyPair.generate()
    x = Executor(kp.peer_id, kp, MemberView(kp.peer_id), ExecutorConfig(labels=(("site", "old"),)))
    want = Conditions(labels=(("site", "lab"),))
    assert x.capacity_problem(want) == "labels do not match"
    x.relabel((("site", "lab"),))
    assert x.capacity_problem(want) is None
