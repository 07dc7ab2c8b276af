"""Housekeeping by hand: ``pgmsg archive`` (``--no-history``: expire) and ``pgmsg purge`` (pg_cron runs the
same functions every minute, in batches)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import click
import psycopg

from pgmsg.cli.context import AppContext, confirm, json_option, pass_app, yes_option
from pgmsg.cli.durations import DURATION, describe_duration
from pgmsg.cli.output import emit
from pgmsg.errors import translated

DEFAULT_ARCHIVE_BATCH = 10000
DEFAULT_PURGE_BATCH = 50000


def count_archivable(conn: psycopg.Connection[dict[str, Any]], older_than: timedelta) -> int:
    """Messages pgmsg_archive_messages would move now (the same condition), for the estimate."""
    with translated("counting messages to archive"):
        row = conn.execute(
            """
            SELECT count(*) AS n FROM messages m
             WHERE m.created_at < now() - %s::interval
               AND NOT EXISTS (SELECT 1 FROM message_delivery d
                                WHERE d.message_id = m.id AND d.status IN ('pending', 'processing'))
            """,
            (older_than,),
        ).fetchone()
    assert row is not None
    return int(row["n"])


def count_purgeable(conn: psycopg.Connection[dict[str, Any]], older_than: timedelta) -> int:
    """Deliveries pgmsg_purge_deliveries would delete now (the same condition)."""
    with translated("counting deliveries to purge"):
        row = conn.execute(
            "SELECT count(*) AS n FROM message_delivery WHERE status IN ('delivered', 'notified') "
            "AND coalesce(delivered_at, created_at) < now() - %s::interval",
            (older_than,),
        ).fetchone()
    assert row is not None
    return int(row["n"])


def run_batches(conn: psycopg.Connection[dict[str, Any]], function: str, older_than: timedelta,
                batch: int, progress: Callable[[int], None]) -> int:
    """Call an archive/expire/purge function until it returns 0; each call commits on its own,
    so an interrupted run keeps what it did and the next run carries on."""
    # The function name comes from this module, never from the user.
    statement = {"archive": "SELECT pgmsg_archive_messages(%s::interval, %s) AS n",
                 "expire": "SELECT pgmsg_expire_messages(%s::interval, %s) AS n",
                 "purge": "SELECT pgmsg_purge_deliveries(%s::interval, %s) AS n"}[function]
    done = 0
    while True:
        with translated(f"running pgmsg_{function}"):
            row = conn.execute(statement, (older_than, batch)).fetchone()
        moved = int(row["n"]) if row else 0
        if moved == 0:
            return done
        done += moved
        progress(moved)


def _run_with_bar(app: AppContext, function: str, older_than: timedelta, batch: int, estimate: int,
                  label: str) -> int:
    conn = app.connection()
    # The bar goes to stderr so stdout carries only the result (and stays valid JSON).
    with click.progressbar(length=max(estimate, 1), label=label, show_eta=True, show_pos=True,
                           file=sys.stderr) as bar:
        return run_batches(conn, function, older_than, batch, bar.update)


@click.command()
@click.option("--older-than", type=DURATION, required=True,
              help="Archive finished messages created longer ago than this (30d, 12h, '90 days').")
@click.option("--batch", type=click.IntRange(min=1), default=DEFAULT_ARCHIVE_BATCH, show_default=True,
              help="Messages moved per transaction.")
@click.option("--no-history", is_flag=True,
              help="Delete the messages with their deliveries and attempts instead of moving them to the "
                   "history tables (as housekeeping_keep_history: false does); asks first.")
@yes_option
@json_option
@pass_app
def archive(app: AppContext, older_than: timedelta, batch: int, no_history: bool, yes: bool) -> None:
    """Move old finished messages, with their deliveries and attempts, to the history tables.

    A message is finished when none of its deliveries is pending or
    processing. Runs batch after batch (each one committed) until nothing is
    left, with a progress bar estimated from a count made first; interrupt it
    any time and run it again to carry on. With --no-history the same
    messages are deleted and nothing is kept.

    \b
    Examples:
      pgmsg archive --older-than 30d
      pgmsg archive --older-than '90 days' --batch 1000
      pgmsg archive --older-than 30d --no-history --yes
    """
    estimate = count_archivable(app.connection(), older_than)
    if no_history and estimate:
        confirm(f"Delete {estimate} finished message(s) older than {describe_duration(older_than)} with their "
                "deliveries and attempts, keeping no history? This cannot be undone.", yes)
    function, label = ("expire", "Deleting messages") if no_history else ("archive", "Archiving messages")
    moved = _run_with_bar(app, function, older_than, batch, estimate, label) if estimate else 0
    done = "deleted" if no_history else "archived"
    emit({done: moved, "estimated": estimate} if app.json else
         f"{done} {moved} message(s) older than {describe_duration(older_than)} "
         "with their deliveries and attempts", app.json)


@click.command()
@click.option("--older-than", type=DURATION, required=True,
              help="Delete delivered/notified deliveries finished longer ago than this (7d, '14 days').")
@click.option("--batch", type=click.IntRange(min=1), default=DEFAULT_PURGE_BATCH, show_default=True,
              help="Deliveries deleted per transaction.")
@yes_option
@json_option
@pass_app
def purge(app: AppContext, older_than: timedelta, batch: int, yes: bool) -> None:
    """Delete deliveries (and their attempts) finished longer ago than --older-than (asks first).

    Only delivered and notified deliveries go; their messages stay. Failed,
    dead and pending deliveries are never purged.

    \b
    Examples:
      pgmsg purge --older-than 7d
      pgmsg purge --older-than '14 days' --yes
    """
    estimate = count_purgeable(app.connection(), older_than)
    if estimate == 0:
        emit({"purged": 0} if app.json else "no deliveries to purge", app.json)
        return
    confirm(f"Delete {estimate} delivered/notified deliveries finished more than "
            f"{describe_duration(older_than)} ago? This cannot be undone.", yes)
    purged = _run_with_bar(app, "purge", older_than, batch, estimate, "Purging deliveries")
    emit({"purged": purged} if app.json else f"purged {purged} deliveries", app.json)
