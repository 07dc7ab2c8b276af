"""``pgmsg deliveries``: list deliveries and summarise them (counts, delivery delay percentiles)."""

from __future__ import annotations

from datetime import timedelta

import click

from pgmsg.cli.context import AppContext, json_option, pass_app
from pgmsg.cli.durations import DURATION
from pgmsg.cli.output import Column, emit, format_seconds
from pgmsg.client import DELIVERY_MODES

STATUSES = ("pending", "processing", "delivered", "failed", "notified", "dead", "cancelled")

LIST_COLUMNS = (
    Column("id"),
    Column("message_id"),
    Column("client_id"),
    Column("delivery_mode", "mode"),
    Column("status"),
    Column("attempts"),
    Column("created_at"),
    Column("delivered_at"),
    Column("push_status_code", "http"),
    Column("last_error"),
)

STATS_COLUMNS = (
    Column("client_id"),
    Column("delivery_mode", "mode"),
    *(Column(status) for status in STATUSES),
    Column("total"),
    Column("p50_seconds", "p50", format_seconds),
    Column("p95_seconds", "p95", format_seconds),
    Column("p99_seconds", "p99", format_seconds),
)


@click.group()
def deliveries() -> None:
    """Inspect deliveries: one row per message and subscription.

    \b
    Examples:
      pgmsg deliveries list --client webhook-server --status failed
      pgmsg deliveries stats --since 1h
    """


@deliveries.command("list")
@click.option("--client", "client_id", help="Only this client's deliveries.")
@click.option("--status", type=click.Choice(STATUSES), help="Only deliveries in this status.")
@click.option("--mode", type=click.Choice(DELIVERY_MODES), help="Only deliveries of this mode.")
@click.option("--message-id", type=int, help="Only the deliveries of this message.")
@click.option("--since", type=DURATION, help="Only deliveries created within this duration (30m, 12h, 7d).")
@click.option(
    "--limit",
    type=click.IntRange(1, 100000),
    default=50,
    show_default=True,
    help="At most this many rows, newest first.",
)
@json_option
@pass_app
def list_(
    app: AppContext,
    client_id: str | None,
    status: str | None,
    mode: str | None,
    message_id: int | None,
    since: timedelta | None,
    limit: int,
) -> None:
    """List deliveries, newest first, filtered by client, status, mode, message or age.

    \b
    Examples:
      pgmsg deliveries list
      pgmsg deliveries list --client webhook-server --status failed --since 12h
      pgmsg deliveries list --message-id 1001 --json
    """
    rows = app.client().find_deliveries(
        client_id=client_id, status=status, mode=mode, message_id=message_id, since=since, limit=limit
    )
    emit(rows, app.json, columns=LIST_COLUMNS, empty="no deliveries match")


@deliveries.command("stats")
@click.option("--client", "client_id", help="Only this client's deliveries.")
@click.option("--since", type=DURATION, help="Only deliveries created within this duration (30m, 12h, 7d).")
@json_option
@pass_app
def stats(app: AppContext, client_id: str | None, since: timedelta | None) -> None:
    """Count deliveries per client, mode and status, with delivery delay percentiles.

    The delay is delivered_at - created_at; p50, p95 and p99 are computed in
    the database (percentile_cont) over the delivered rows. JSON gives them in
    seconds.

    \b
    Examples:
      pgmsg deliveries stats
      pgmsg deliveries stats --client webhook-server --since 24h
      pgmsg deliveries stats --json
    """
    rows = app.client().delivery_stats(client_id=client_id, since=since)
    emit(rows, app.json, columns=STATS_COLUMNS, empty="no deliveries match")
