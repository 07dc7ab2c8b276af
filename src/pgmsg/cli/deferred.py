"""``pgmsg deferred``: messages published with deferred fan-out that wait for, or failed in, the fan-out."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from pgmsg.cli.context import AppContext, confirm, json_option, pass_app, yes_option
from pgmsg.cli.output import Column, emit

FAILURE_COLUMNS = (
    Column("id"),
    Column("message_type", "type"),
    Column("namespace"),
    Column("created_at"),
    Column("failed_at"),
    Column("error"),
)


@click.group()
def deferred() -> None:
    """Deferred fan-out: messages published with --deferred, before pgmsg-fan-out moves them.

    \b
    Examples:
      pgmsg deferred status
      pgmsg deferred failed
      pgmsg deferred retry --id 4711
      pgmsg deferred fan-out
    """


@deferred.command()
@json_option
@pass_app
def status(app: AppContext) -> None:
    """How many deferred messages wait, how long the oldest has, and how many failed.

    For an exit code that says whether that is healthy, use pgmsg health --check deferred.

    \b
    Examples:
      pgmsg deferred status
      pgmsg deferred status --json
    """
    state = app.client().deferred_status()
    oldest = state["oldest_waiting"]
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else None
    if app.json:
        emit({**state, "oldest_waiting_age_seconds": age}, True)
    else:
        waiting = f"{state['waiting']} waiting" + (f", the oldest for {age:.1f} s" if age is not None else "")
        click.echo(
            f"{waiting}; {state['failed']} failed"
            + (" (pgmsg deferred failed lists them)" if state["failed"] else "")
        )


@deferred.command()
@click.option(
    "--limit", type=click.IntRange(1, 10000), default=100, show_default=True, help="Show at most this many."
)
@json_option
@pass_app
def failed(app: AppContext, limit: int) -> None:
    """List deferred messages whose fan-out failed, oldest first, with the error.

    \b
    Examples:
      pgmsg deferred failed
      pgmsg deferred failed --json
    """
    emit(
        app.client().deferred_failures(limit),
        app.json,
        columns=FAILURE_COLUMNS,
        empty="no failed deferred messages",
    )


@deferred.command()
@click.option("--id", "ids", type=int, multiple=True, help="Retry this message (repeatable).")
@yes_option
@json_option
@pass_app
def retry(app: AppContext, ids: tuple[int, ...], yes: bool) -> None:
    """Give failed deferred messages back to the fan-out (asks first); without --id, all of them.

    Fix what failed first (the error says what): a message that fails again
    is set aside again.

    \b
    Examples:
      pgmsg deferred retry --id 4711
      pgmsg deferred retry --yes
    """
    client = app.client()
    failures = client.deferred_failures(10000)
    wanted = set(ids)
    count = len([f for f in failures if not wanted or f["id"] in wanted])
    if wanted - {f["id"] for f in failures}:
        missing = sorted(wanted - {f["id"] for f in failures})
        raise click.BadParameter(
            f"no failed deferred message with id {', '.join(map(str, missing))}", param_hint="--id"
        )
    if count == 0:
        emit({"retried": 0} if app.json else "no failed deferred messages", app.json)
        return
    confirm(f"Give {count} failed deferred message(s) back to the fan-out?", yes)
    retried = client.retry_deferred(list(ids) or None)
    emit({"retried": retried} if app.json else f"gave {retried} message(s) back to the fan-out", app.json)


@deferred.command("fan-out")
@click.option(
    "--limit",
    type=click.IntRange(1, 100000),
    default=10000,
    show_default=True,
    help="Move at most this many.",
)
@json_option
@pass_app
def fan_out(app: AppContext, limit: int) -> None:
    """Move waiting deferred messages into messages now, as pgmsg-fan-out would.

    Prints how many moved: 0 also when a fan-out worker is moving them at
    that moment.

    \b
    Examples:
      pgmsg deferred fan-out
      pgmsg deferred fan-out --limit 100000
    """
    moved = app.client().fan_out_deferred(limit)
    emit({"moved": moved} if app.json else f"moved {moved} message(s)", app.json)
