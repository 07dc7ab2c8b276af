"""The CLI's parsing and formatting, without a database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import click
import pytest

from pgmsg.cli.durations import DURATION, DURATION_OR_TIMESTAMP, describe_duration, parse_duration
from pgmsg.cli.output import Column, cell, format_seconds, render_table, to_json


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 43200),
        ("15m", 900),
        ("90s", 90),
        ("250ms", 0.25),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("2w", 14 * 86400),
        ("30 days", 30 * 86400),
        ("1 day 2 hours", 93600),
        ("2 hours 30 minutes", 9000),
        ("1 day 02:30:00", 86400 + 9000),
        ("00:15", 900),
        (" 45 Seconds ", 45),
    ],
)
def test_durations_in_short_and_postgresql_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("30", "no unit"),
        ("-5m", "sign"),
        ("5x", "unknown unit"),
        ("1 month", "months"),
        ("2 years", "months and years"),
        ("0s", "zero"),
        ("soon", "not a duration"),
        ("1d; DROP TABLE messages", "not a duration"),
    ],
)
def test_bad_durations_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_duration(text)


def test_duration_parameter_raises_bad_parameter() -> None:
    with pytest.raises(click.BadParameter, match="unknown unit 'fortnights'"):
        DURATION.convert("2 fortnights", None, None)


def test_duration_or_timestamp() -> None:
    assert DURATION_OR_TIMESTAMP.convert("2h", None, None) == timedelta(hours=2)
    assert DURATION_OR_TIMESTAMP.convert("2026-11-01T10:00:00Z", None, None) == datetime(
        2026, 11, 1, 10, tzinfo=UTC
    )
    assert DURATION_OR_TIMESTAMP.convert("2026-11-01", None, None).tzinfo is not None  # local time, not naive
    with pytest.raises(click.BadParameter, match="ISO 8601"):
        DURATION_OR_TIMESTAMP.convert("2026-13-45", None, None)
    with pytest.raises(click.BadParameter, match="ISO 8601"):
        DURATION_OR_TIMESTAMP.convert("yesterday", None, None)


def test_describe_duration() -> None:
    assert [describe_duration(parse_duration(t)) for t in ("30d", "1h30m", "90s", "250ms")] == [
        "30d",
        "1h30m",
        "1m30s",
        "250ms",
    ]


def test_table_aligns_columns_and_right_aligns_numbers() -> None:
    rows = [{"id": 7, "client_id": "a", "err": None}, {"id": 1234, "client_id": "long-name", "err": "x\ny"}]
    text = render_table(rows, [Column("id"), Column("client_id", "client"), Column("err")])
    assert text.splitlines() == [
        "id    client     err",
        "   7  a          -",
        "1234  long-name  x y",
    ]


def test_cells_are_one_line_and_cut() -> None:
    assert cell(True) == "yes" and cell(None) == "-"
    assert cell({"a": [1, 2]}) == '{"a":[1,2]}'
    assert len(cell("e" * 500)) == 60 and cell("e" * 500).endswith("…")
    assert cell(datetime(2026, 11, 27, 16, 31, 6, 246684, tzinfo=UTC)) == "2026-11-27 16:31:06+00:00"


def test_json_encodes_datetimes_and_numbers() -> None:
    data = {
        "at": datetime(2026, 11, 27, 16, 31, tzinfo=UTC),
        "ms": Decimal("1.5"),
        "age": timedelta(minutes=1),
    }
    assert json.loads(to_json(data)) == {"at": "2026-11-27T16:31:00+00:00", "ms": 1.5, "age": 60.0}


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (0.012, 3.4, 302, 7500, 3 * 86400 + 4 * 3600)] == [
        "12ms",
        "3.40s",
        "5m02s",
        "2h05m",
        "3d04h",
    ]
