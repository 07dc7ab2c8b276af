"""Durations (``30d``, ``12h``, ``15m``, ``90s``, ``'30 days'``) and timestamps on the command line.

They are parsed here, in Python, and travel to the database as interval or
timestamptz bind parameters; nothing the operator types becomes SQL text.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import click

_SECONDS = {
    "w": 604800,
    "wk": 604800,
    "week": 604800,
    "weeks": 604800,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "ms": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
}
_VAGUE = {"mon", "mons", "month", "months", "y", "yr", "yrs", "year", "years"}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*,?")
# PostgreSQL also writes intervals as "1 day 02:30:00".
_CLOCK = re.compile(r"(?:^|\s)(\d+):([0-5]\d)(?::([0-5]\d(?:\.\d+)?))?\s*$")

EXAMPLES = "such as 30d, 12h, 15m, 90s, 1h30m or '30 days'"


def parse_duration(text: str) -> timedelta:
    """A positive duration; ValueError saying what is wrong otherwise."""
    raw = text
    text = text.strip().lower()
    if not text:
        raise ValueError(f"empty duration: give a number with a unit, {EXAMPLES}")
    if text[0] in "+-":
        raise ValueError(f"{raw!r} has a sign: give a positive duration, {EXAMPLES}")
    seconds = 0.0
    clock = _CLOCK.search(text)
    if clock:
        hours, minutes, secs = clock.groups()
        seconds += int(hours) * 3600 + int(minutes) * 60 + float(secs or 0)
        text = text[: clock.start()]
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match:
            if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", text[pos:]):
                raise ValueError(
                    f"{raw!r} has no unit: write e.g. {text[pos:].strip()}s or "
                    f"{text[pos:].strip()}m ({EXAMPLES})"
                )
            raise ValueError(f"{raw!r} is not a duration: use a number with a unit, {EXAMPLES}")
        number, unit = match.groups()
        if unit in _VAGUE:
            raise ValueError(f"{raw!r}: months and years have no fixed length; give days instead, e.g. 30d")
        if unit not in _SECONDS:
            raise ValueError(f"{raw!r}: unknown unit {unit!r}; use w, d, h, m, s or ms ({EXAMPLES})")
        seconds += float(number) * _SECONDS[unit]
        pos = match.end()
    if seconds <= 0:
        raise ValueError(f"{raw!r} is zero: give a positive duration, {EXAMPLES}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError as exc:  # more than timedelta's 999999999 days (or infinite)
        raise ValueError(f"{raw[:40]!r} is too long: give at most 999999999 days") from exc


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 date or timestamp; without an offset it is the local time zone."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not an ISO 8601 timestamp such as 2026-11-01 or 2026-11-01T14:30:00+01:00"
        ) from exc
    return value if value.tzinfo is not None else value.astimezone()


class Duration(click.ParamType):
    """A click parameter giving a :class:`~datetime.timedelta`."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class DurationOrTimestamp(click.ParamType):
    """A duration back from now (``2h``) or a point in time (``2026-11-01T10:00Z``)."""

    name = "duration|timestamp"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta | datetime:
        if isinstance(value, timedelta | datetime):
            return value
        text = str(value)
        try:
            return parse_duration(text)
        except ValueError as duration_error:
            if not re.match(r"\s*\d{4}-\d{2}-\d{2}", text):
                self.fail(
                    f"{duration_error}; or give an ISO 8601 timestamp such as 2026-11-01T14:30:00Z",
                    param,
                    ctx,
                )
            try:
                return parse_timestamp(text)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)


DURATION = Duration()
DURATION_OR_TIMESTAMP = DurationOrTimestamp()


def describe_duration(value: timedelta) -> str:
    """A duration the way an operator writes it: 30d, 1h30m, 90s -> 1m30s."""
    total = value.total_seconds()
    if total < 1:
        return f"{round(total * 1000)}ms"
    parts = []
    remaining = round(total)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, remaining = divmod(remaining, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
