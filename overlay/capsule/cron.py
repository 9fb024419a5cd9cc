"""Cron schedules: the standard 5-field syntax, the `@` macros and `@every DURATION`.

Pure and deterministic (every node computes the same ticks from the same text): times
are POSIX seconds, read in UTC; a tick is a whole number of seconds.

Syntax (Vixie cron, as `crontab(5)`; `@every` as robfig/cron, which ColonyOS uses):

- ``minute hour day-of-month month day-of-week``; each field is ``*``, a number, a
  range ``a-b``, a step ``*/n`` or ``a-b/n`` or ``a/n``, or a comma-separated list of
  these. Months take ``jan``–``dec``, weekdays ``sun``–``sat``; weekday 7 is Sunday too.
- When both day-of-month and day-of-week are restricted (neither starts with ``*``),
  a day matches if *either* matches (crontab(5)'s rule, surprising but standard).
- ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``),
  ``@hourly``.
- ``@every 30s``, ``@every 5m``, ``@every 1h30m``: ticks at ``⌊anchor⌋ + k·d``, k ≥ 1,
  for an anchor the caller fixes (a trigger uses its creation time, so every node
  agrees).

Errors are `CronError` (a `ValueError`) naming the field and the text.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}  # fmt: skip
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS), ("day-of-week", 0, 7, _DAYS))  # fmt: skip
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
#: Shortest `@every` period: a trigger firing faster than this is a load test.
MIN_EVERY_S = 1
#: Longest search for the next tick (a schedule such as Feb 30 never fires).
MAX_SEARCH_DAYS = 366 * 8


class CronError(ValueError):
    """A schedule that does not parse."""


def _field(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: bad step in {part!r}")
            step = int(step_text)
        if base == "*":
            first, last = lo, hi
        else:
            a, dash, b = base.partition("-")
            first = _value(a, name, lo, hi, names)
            last = _value(b, name, lo, hi, names) if dash else (hi if step_text else first)
            if last < first:
                raise CronError(f"{name}: range {part!r} runs backwards")
        out.update(range(first, last + 1, step))
    return frozenset(out)


def _value(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> int:
    v = names.get(text.lower()) if names else None
    if v is None:
        if not text.isdigit():
            raise CronError(f"{name}: {text!r} is not a number"
                            + (f" or a name ({', '.join(names)})" if names else ""))
        v = int(text)
    if not lo <= v <= hi:
        raise CronError(f"{name}: {v} is outside {lo}-{hi}")
    return v


def parse_duration(text: str) -> int:
    """`1h30m`, `45s`, `5m` → seconds (whole seconds, at least MIN_EVERY_S)."""
    m = _DURATION.match(text.strip())
    if not m or not any(m.groups()):
        raise CronError(f"@every: {text!r} is not a duration like 30s, 5m or 1h30m")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    total = h * 3600 + mi * 60 + s
    if total < MIN_EVERY_S:
        raise CronError(f"@every: the period must be at least {MIN_EVERY_S} s")
    return total


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule; `every_s` > 0 for `@every`, else the five field sets."""

    text: str
    every_s: int = 0
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 = Sunday
    either_day: bool = False  # both day fields restricted: a day matches either

    @classmethod
    def parse(cls, text: str) -> Schedule:
        src = " ".join(text.split())
        if src.startswith("@every"):
            return cls(src, every_s=parse_duration(src[len("@every"):]))
        expanded = MACROS.get(src.lower(), src)
        if expanded.startswith("@"):
            raise CronError(f"unknown macro {src!r}; known: {', '.join(MACROS)}, @every")
        parts = expanded.split(" ")
        if len(parts) != 5:
            raise CronError(f"{src!r}: expected 5 fields (minute hour day-of-month month "
                            f"day-of-week), got {len(parts)}")
        sets = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(src, 0, sets[0], sets[1], sets[2], sets[3], weekdays,
                   either_day=not parts[2].startswith("*") and not parts[4].startswith("*"))

    def _day_ok(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.weekday() + 1) % 7 in self.weekdays  # Python: Monday 0; cron: Sunday 0
        return (dom or dow) if self.either_day else (dom and dow)

    def matches(self, tick: int, anchor: float = 0.0) -> bool:
        """True when `tick` is one of the schedule's ticks (`anchor`: see `@every`)."""
        if self.every_s:
            return tick > anchor and (tick - int(anchor)) % self.every_s == 0
        if tick % 60:
            return False
        d = datetime.fromtimestamp(tick, UTC)
        return (d.minute in self.minutes and d.hour in self.hours
                and d.month in self.months and self._day_ok(d))

    def next_after(self, t: float, anchor: float = 0.0) -> int | None:
        """The first tick strictly after `t`; None if there is none within 8 years."""
        if self.every_s:
            a = int(anchor)
            k = max(1, int((t - a) // self.every_s) + 1)
            return a + k * self.every_s
        start = datetime.fromtimestamp((int(t) // 60 + 1) * 60, UTC)
        day = start.replace(hour=0, minute=0)
        for _ in range(MAX_SEARCH_DAYS):
            if day.month in self.months and self._day_ok(day):
                for h in sorted(self.hours):
                    for m in sorted(self.minutes):
                        cand = day.replace(hour=h, minute=m)
                        if cand >= start:
                            return int(cand.timestamp())
            day += timedelta(days=1)
        return None

    def ticks_between(self, after: float, until: float, anchor: float = 0.0,
                      limit: int = 1000) -> list[int]:
        """Ticks in (after, until], oldest first, at most `limit` (the newest ones)."""
        out: list[int] = []
        if self.every_s:
            a = int(anchor)
            last = int((until - a) // self.every_s)
            first = max(1, int((after - a) // self.every_s) + 1)
            first = max(first, last - limit + 1)
            return [a + k * self.every_s for k in range(first, last + 1)]
        t = after
        while True:
            nxt = self.next_after(t, anchor)
            if nxt is None or nxt > until:
                return out[-limit:]
            out.append(nxt)
            if len(out) > 2 * limit:
                del out[:-limit]
            t = nxt
