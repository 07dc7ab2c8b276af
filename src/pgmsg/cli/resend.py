"""Sending again: ``pgmsg retry`` (failed HTTP pushes, now) and ``pgmsg replay`` (a client's history)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click

from pgmsg.cli.context import AppContext, CommandError, confirm, json_option, pass_app, yes_option
from pgmsg.cli.durations import DURATION, DURATION_OR_TIMESTAMP
from pgmsg.cli.lookups import require_client
from pgmsg.cli.output import Column, emit, format_seconds
from pgmsg.client import Client
from pgmsg.client.operations import DEFAULT_MAX_RETRIES
from pgmsg.errors import InvalidInput

RETRY_COLUMNS = (
    Column("delivery_id"),
    Column("message_id"),
    Column("client_id"),
    Column("status"),
    Column("push_status_code", "http"),
    Column("last_error"),
)


@click.command()
@click.option("--client", "client_id", help="Only this client's failed pushes.")
@click.option("--since", type=DURATION, help="Only deliveries created within this duration (30m, 12h, 7d).")
@click.option(
    "--id",
    "ids",
    type=int,
    multiple=True,
    help="Retry this delivery (repeatable); named deliveries are retried whatever their retry count.",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_RETRIES,
    show_default=True,
    help="Skip deliveries already retried this many times (not applied to --id).",
)
@yes_option
@json_option
@pass_app
def retry(
    app: AppContext,
    client_id: str | None,
    since: timedelta | None,
    ids: tuple[int, ...],
    max_retries: int,
    yes: bool,
) -> None:
    """Re-send failed HTTP pushes now and show each outcome (asks first).

    Failed means the endpoint refused for good (3xx/4xx) or, for
    in-transaction subscriptions, any failure. Each push happens inside the
    database (signed and allowlisted, an attempt is logged). Exits 1 when a
    retried delivery failed again or a named one could not be retried.
    This is the database's retry_failed_http_push(), which re-sends at most
    50 per run (run it again for more).

    It says how many it would re-send and asks; only a person at a terminal
    can answer. Without a terminal (cron, a pipe) it refuses unless --yes.

    \b
    Examples:
      pgmsg retry
      pgmsg retry --client webhook-server --since 1h
      pgmsg retry --id 4711 --id 4712 --yes
    """
    client = app.client()
    if client_id is not None:
        require_client(client, client_id)
    wanted = dict(client_id=client_id, max_retries=max_retries, since=since, delivery_ids=list(ids) or None)
    count = client.count_failed_http_pushes(**wanted)
    outcomes: list[dict[str, Any]] = []
    if count:
        confirm(
            f"Re-send {count} failed HTTP push(es) {retry_scope(client_id, since, ids)} now"
            f"{' (at most 50 in this run)' if count > 50 else ''}?",
            yes,
            at_terminal=True,
        )
        outcomes = client.retry_failed_http_push(**wanted)
    retried = {o["delivery_id"] for o in outcomes}
    problems = [
        f"delivery {i} is not a failed http delivery (matching the filters); skipped"
        for i in dict.fromkeys(ids)
        if i not in retried
    ]
    emit(outcomes, app.json, columns=RETRY_COLUMNS, empty="no failed http deliveries to retry")
    for problem in problems:
        click.echo(problem, err=True)
    still_failing = [o["delivery_id"] for o in outcomes if o["status"] != "delivered"]
    if still_failing or problems:
        raise CommandError(
            f"{len(still_failing)} of {len(outcomes)} retried deliveries not delivered"
            + (f", {len(problems)} skipped" if problems else "")
        )


def retry_scope(client_id: str | None, since: timedelta | None, ids: tuple[int, ...]) -> str:
    """Which failed pushes a retry takes, in words, for its question."""
    scope = f"of client {client_id!r}" if client_id else "of every client"
    if ids:
        scope += f" among ids {', '.join(map(str, dict.fromkeys(ids)))}"
    if since is not None:
        scope += f" created in the last {format_seconds(since.total_seconds())}"
    return scope


@click.command()
@click.argument("client_id")
@click.option("--from-id", type=click.IntRange(min=1), help="Replay messages from this message id on.")
@click.option(
    "--since",
    type=DURATION_OR_TIMESTAMP,
    help="Replay messages created since then: a duration back from now (2h, 7d) or a timestamp.",
)
@click.option(
    "--until",
    type=DURATION_OR_TIMESTAMP,
    help="With --since: only messages created before then (a duration back from now, or a timestamp).",
)
@yes_option
@json_option
@pass_app
def replay(
    app: AppContext,
    client_id: str,
    from_id: int | None,
    since: timedelta | datetime | None,
    until: timedelta | datetime | None,
    yes: bool,
) -> None:
    """Deliver CLIENT_ID's messages again, from a message id or in a time window (asks first).

    Existing deliveries start over (webhooks get a new webhook-id); matching
    messages the client never had get a delivery. Timestamps without an
    offset are in the local time zone.

    \b
    Examples:
      pgmsg replay analytics-service --from-id 5000
      pgmsg replay analytics-service --since 2h
      pgmsg replay webhook-server --since 2026-11-01T00:00:00Z --until 2026-11-02T00:00:00Z --yes
    """
    if (from_id is None) == (since is None):
        raise click.UsageError("give exactly one of --from-id or --since")
    if until is not None and since is None:
        raise click.UsageError("--until needs --since")
    client = app.client()
    counts = require_client(client, client_id)
    if counts["active"] == 0:
        raise InvalidInput(
            f"client {client_id!r} has no active subscription; "
            f"resume it first (pgmsg subscriptions resume {client_id})"
        )
    start, end = (to_instant(client, since), to_instant(client, until)) if since is not None else (None, None)
    if start is not None and end is not None and end <= start:
        raise click.BadParameter("--until must be later than --since", param_hint="--until")
    what = (
        f"from message id {from_id}"
        if from_id is not None
        else (f"created since {start.isoformat()}" + (f" and before {end.isoformat()}" if end else ""))
    )
    confirm(f"Replay the messages {what} to {client_id!r}? Its deliveries of them start over.", yes)
    count = client.replay(client_id, from_message_id=from_id, since=start, until=end)
    emit(
        {"client_id": client_id, "replayed": count}
        if app.json
        else f"replayed {count} deliveries to {client_id!r}",
        app.json,
    )


def to_instant(client: Client, value: timedelta | datetime | None) -> datetime | None:
    """A timestamp as is; a duration as that long before the database's clock (not this host's)."""
    if value is None or isinstance(value, datetime):
        return value
    return client.database_time_ago(value)
