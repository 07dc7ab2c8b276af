"""Sending again: ``pgmsg retry`` (failed HTTP pushes, now) and ``pgmsg replay`` (a client's history)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click
import psycopg

from pgmsg.cli.context import AppContext, CommandError, confirm, json_option, pass_app, yes_option
from pgmsg.cli.durations import DURATION, DURATION_OR_TIMESTAMP
from pgmsg.cli.lookups import require_client
from pgmsg.cli.output import Column, emit
from pgmsg.errors import InvalidInput, translated

#: The same cap retry_failed_http_push() applies by default.
DEFAULT_MAX_RETRIES = 10

RETRY_COLUMNS = (
    Column("delivery_id"),
    Column("message_id"),
    Column("client_id"),
    Column("status"),
    Column("push_status_code", "http"),
    Column("last_error"),
)


def failed_http_deliveries(conn: psycopg.Connection[dict[str, Any]], *, client_id: str | None,
                           since: timedelta | None, ids: list[int] | None, max_retries: int) -> list[int]:
    """Ids of failed http deliveries to retry; the retry cap is waived for ids named explicitly."""
    with translated("finding failed http deliveries"):
        rows = conn.execute(
            """
            SELECT id FROM message_delivery
             WHERE status = 'failed' AND delivery_mode = 'http'
               AND (%(client)s::text IS NULL OR client_id = %(client)s)
               AND (%(since)s::interval IS NULL OR created_at >= now() - %(since)s::interval)
               AND (%(ids)s::bigint[] IS NULL AND retry_count < %(cap)s OR id = ANY (%(ids)s::bigint[]))
             ORDER BY id
            """,
            {"client": client_id, "since": since, "ids": ids, "cap": max_retries},
        ).fetchall()
    return [r["id"] for r in rows]


def resend_now(conn: psycopg.Connection[dict[str, Any]], delivery_id: int) -> dict[str, Any] | None:
    """Push one failed http delivery again, as retry_failed_http_push() does; None if it is
    no longer failed or another session holds it."""
    with translated(f"re-sending delivery {delivery_id}"):
        with conn.transaction():
            locked = conn.execute(
                "SELECT id FROM message_delivery WHERE id = %s AND status = 'failed' AND delivery_mode = 'http' "
                "FOR UPDATE SKIP LOCKED",
                (delivery_id,),
            ).fetchone()
            if locked is None:
                return None
            conn.execute("UPDATE message_delivery SET retry_count = retry_count + 1 WHERE id = %s", (delivery_id,))
            conn.execute("SELECT pgmsg_push_http(%s)", (delivery_id,))
        return conn.execute(
            "SELECT id AS delivery_id, message_id, client_id, status, push_status_code, last_error "
            "FROM message_delivery WHERE id = %s",
            (delivery_id,),
        ).fetchone()


@click.command()
@click.option("--client", "client_id", help="Only this client's failed pushes.")
@click.option("--since", type=DURATION, help="Only deliveries created within this duration (30m, 12h, 7d).")
@click.option("--id", "ids", type=int, multiple=True,
              help="Retry this delivery (repeatable); named deliveries are retried whatever their retry count.")
@click.option("--max-retries", type=click.IntRange(min=1), default=DEFAULT_MAX_RETRIES, show_default=True,
              help="Skip deliveries already retried this many times (not applied to --id).")
@json_option
@pass_app
def retry(app: AppContext, client_id: str | None, since: timedelta | None, ids: tuple[int, ...],
          max_retries: int) -> None:
    """Re-send failed HTTP pushes now and show each outcome.

    Failed means the endpoint refused for good (3xx/4xx) or, for
    in-transaction subscriptions, any failure. Each push happens inside the
    database (signed and allowlisted, an attempt is logged). Exits 1 when a
    retried delivery failed again or a named one could not be retried.

    \b
    Examples:
      pgmsg retry
      pgmsg retry --client webhook-server --since 1h
      pgmsg retry --id 4711 --id 4712
    """
    conn = app.connection()
    if client_id is not None:
        require_client(conn, client_id)
    wanted = list(ids) or None
    candidates = failed_http_deliveries(conn, client_id=client_id, since=since, ids=wanted,
                                        max_retries=max_retries)
    problems = [f"delivery {i} is not a failed http delivery (matching the filters); skipped"
                for i in dict.fromkeys(ids) if i not in candidates]
    outcomes = []
    for delivery_id in candidates:
        outcome = resend_now(conn, delivery_id)
        if outcome is None:
            problems.append(f"delivery {delivery_id} was taken or changed meanwhile; skipped")
        else:
            outcomes.append(outcome)
    emit(outcomes, app.json, columns=RETRY_COLUMNS, empty="no failed http deliveries to retry")
    for problem in problems:
        click.echo(problem, err=True)
    still_failing = [o["delivery_id"] for o in outcomes if o["status"] != "delivered"]
    if still_failing or problems:
        raise CommandError(f"{len(still_failing)} of {len(outcomes)} retried deliveries not delivered"
                           + (f", {len(problems)} skipped" if problems else ""))


@click.command()
@click.argument("client_id")
@click.option("--from-id", type=click.IntRange(min=1), help="Replay messages from this message id on.")
@click.option("--since", type=DURATION_OR_TIMESTAMP,
              help="Replay messages created since then: a duration back from now (2h, 7d) or a timestamp.")
@click.option("--until", type=DURATION_OR_TIMESTAMP,
              help="With --since: only messages created before then (a duration back from now, or a timestamp).")
@yes_option
@json_option
@pass_app
def replay(app: AppContext, client_id: str, from_id: int | None, since: timedelta | datetime | None,
           until: timedelta | datetime | None, yes: bool) -> None:
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
    conn = app.connection()
    counts = require_client(conn, client_id)
    if counts["active"] == 0:
        raise InvalidInput(f"client {client_id!r} has no active subscription; "
                           f"resume it first (pgmsg subscriptions resume {client_id})")
    start, end = (to_instant(conn, since), to_instant(conn, until)) if since is not None else (None, None)
    if start is not None and end is not None and end <= start:
        raise click.BadParameter("--until must be later than --since", param_hint="--until")
    what = f"from message id {from_id}" if from_id is not None else (
        f"created since {start.isoformat()}" + (f" and before {end.isoformat()}" if end else ""))
    confirm(f"Replay the messages {what} to {client_id!r}? Its deliveries of them start over.", yes)
    count = app.client().replay(client_id, from_message_id=from_id, since=start, until=end)
    emit({"client_id": client_id, "replayed": count} if app.json else
         f"replayed {count} deliveries to {client_id!r}", app.json)


def to_instant(conn: psycopg.Connection[dict[str, Any]], value: timedelta | datetime | None) -> datetime | None:
    """A timestamp as is; a duration as that long before the database's clock (not this host's)."""
    if value is None or isinstance(value, datetime):
        return value
    row = conn.execute("SELECT now() - %s::interval AS at", (value,)).fetchone()
    assert row is not None
    return row["at"]
