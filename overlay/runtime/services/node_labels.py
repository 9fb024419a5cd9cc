"""Node labels changed while the daemon runs (serf's `serf tags -set/-delete`).

A node's labels (`key=value`) are what capsules require in `conditions.labels` and what
`colony members --label` filters on. They start from `[capsule] labels` in config.toml;
`colony labels --set k=v --delete k` (POST /v1/labels) changes them on the running
daemon, which then:

1. re-signs its gossiped resource ad with the new labels (a new ad version, so every
   member has them within a gossip round: the same path a load change takes);
2. gives the capsule core's executor the new labels, so an offer is checked against
   what the node now says it has (placement uses the gossiped ads, the executor its own
   config: both must move together or offers would be refused as "labels do not
   match");
3. writes them to `labels.json` in the home (serf's `-tags-file`): at the next start
   that file, when present, takes the place of `[capsule] labels`. The write is atomic
   (temp file, fsync, rename) and happens before the change is announced, so a label a
   peer has seen survives a crash.

Limits are the gossip ad's (gossip/resources.py): at most 64 labels, keys and values of
at most 256 characters; keys are non-empty, without `=` or whitespace at the ends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import structlog

from gossip.events import UpdateAd
from gossip.resources import MAX_ITEMS, MAX_STR
from overlay.capsule.part import Relabel
from overlay.core.errors import ConfigError
from overlay.runtime.context import Cores, Membership

log = structlog.get_logger()

LABELS_FILE = "labels.json"

Labels = tuple[tuple[str, str], ...]


def _check(key: str, value: str) -> None:
    if not key or key != key.strip() or "=" in key:
        raise ConfigError(f"label key {key!r}: must be non-empty, without '=' or "
                          "surrounding spaces")  # fmt: skip
    if len(key) > MAX_STR or len(value) > MAX_STR:
        raise ConfigError(f"label {key!r}: keys and values are at most {MAX_STR} characters")


def changed(current: Labels, set_: Mapping[str, str], delete: Iterable[str]) -> Labels:
    """`current` with `set_` applied, then `delete` removed; refuses what gossip would."""
    out = dict(current)
    for k, v in set_.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ConfigError("labels are strings: {\"key\": \"value\"}")
        _check(k, v)
        out[k] = v
    for k in delete:
        if not isinstance(k, str):
            raise ConfigError("labels to delete are key strings")
        out.pop(k, None)
    if len(out) > MAX_ITEMS:
        raise ConfigError(f"a node has at most {MAX_ITEMS} labels ({len(out)} asked)")
    return tuple(sorted(out.items()))


def stored_labels(home: Path) -> Labels | None:
    """The labels saved by a previous change (None: never changed; use config.toml)."""
    path = home / LABELS_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not readable as JSON ({e}); fix or remove it") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a JSON object of labels")
    try:
        return changed((), raw, ())
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def save_labels(home: Path, labels: Labels) -> None:
    """Atomic and durable: a reader sees the old file or the new one, never half."""
    path = home / LABELS_FILE
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(dict(labels), f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(home, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself
    finally:
        os.close(fd)


class NodeLabels:
    """This node's labels: read, change, persist, announce."""

    def __init__(self, home: Path, labels: Labels, cores: Cores, membership: Membership
                 ) -> None:  # fmt: skip
        self.home = home
        self.labels = labels
        self._cores = cores
        self._membership = membership

    def apply(self, set_: Mapping[str, str], delete: Iterable[str]) -> Labels:
        new = changed(self.labels, set_, delete)
        if new == self.labels:
            return new
        save_labels(self.home, new)
        self.labels = new
        # Executor first: once the ad is out, offers for the new labels may arrive.
        self._cores.handle_now(Relabel(new))
        ad = self._membership.own_ad()
        if ad is not None:
            # Read-modify-write with no checkpoint in between (handle_now), as the other
            # ad writers do, so their fields are kept.
            self._cores.handle_now(UpdateAd(replace(ad, labels=new)))
        log.info("labels_changed", labels=dict(new))
        return new
