"""Output for people (aligned text tables) and for programs (JSON), without dependencies."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import click

#: Longer cells (errors, payloads) are cut so that one row stays one line.
MAX_CELL_WIDTH = 60


@dataclasses.dataclass(frozen=True)
class Column:
    """One table column: the row key, its heading, and optionally how to show a value."""

    key: str
    heading: str | None = None
    format: Any = None  # Callable[[Any], str]; Any keeps the dataclass simple to declare

    @property
    def title(self) -> str:
        return self.heading or self.key


def json_default(value: Any) -> Any:
    """What json.dumps cannot encode by itself: datetimes as ISO 8601, intervals as seconds."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    # uuid: message_delivery.lease_token, set by every claim (019).
    if isinstance(
        value,
        uuid.UUID
        | ipaddress.IPv4Network
        | ipaddress.IPv6Network
        | ipaddress.IPv4Address
        | ipaddress.IPv6Address,
    ):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def to_json(data: Any) -> str:
    return json.dumps(data, default=json_default, indent=2, ensure_ascii=False)


def cell(value: Any) -> str:
    """A value as table text: '-' for nothing, seconds precision for times, compact JSON."""
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="seconds")
    elif isinstance(value, dict | list):
        text = json.dumps(value, default=json_default, ensure_ascii=False, separators=(",", ":"))
    else:
        text = str(value)
    text = " ".join(text.split())  # newlines in an error message would break the row
    return text if len(text) <= MAX_CELL_WIDTH else text[: MAX_CELL_WIDTH - 1] + "…"


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Rows as plain text columns; numbers right-aligned, everything else left-aligned."""
    body = [[c.format(row.get(c.key)) if c.format else cell(row.get(c.key)) for c in columns] for row in rows]
    widths = [max([len(c.title)] + [len(line[i]) for line in body]) for i, c in enumerate(columns)]
    numeric = [
        bool(rows)
        and all(
            isinstance(row.get(c.key), int | float | Decimal) and not isinstance(row.get(c.key), bool)
            for row in rows
            if row.get(c.key) is not None
        )
        for c in columns
    ]
    lines = ["  ".join(c.title.ljust(w) for c, w in zip(columns, widths, strict=False)).rstrip()]
    for line in body:
        lines.append(
            "  ".join(
                text.rjust(w) if num else text.ljust(w)
                for text, w, num in zip(line, widths, numeric, strict=False)
            ).rstrip()
        )
    return "\n".join(lines)


def format_seconds(value: float | None) -> str:
    """A duration for people: 12ms, 3.40s, 5m02s, 2h05m, 3d04h."""
    if value is None:
        return "-"
    seconds = float(value)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


#: Key of the click context's ``meta`` set once a command printed its result: a later failure
#: then prints no JSON error object, so stdout stays one JSON document.
EMITTED = "pgmsg.emitted"


def emit(data: Any, as_json: bool, *, columns: Sequence[Column] | None = None, empty: str = "") -> None:
    """Print ``data``: JSON when asked, otherwise a table of ``columns`` (or ``empty``)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[EMITTED] = True
    if as_json:
        click.echo(to_json(data))
    elif columns is not None:
        rows = list(data)
        if rows:
            click.echo(render_table(rows, columns))
        elif empty:
            click.echo(empty)
    else:
        click.echo(data)


def emit_record(record: Mapping[str, Any]) -> None:
    """One record as 'key: value' lines, keys aligned."""
    width = max((len(k) for k in record), default=0)
    for key, value in record.items():
        click.echo(f"{key.ljust(width)}  {cell(value) if not isinstance(value, str) else value}")
