"""Housekeeping by hand: ``pgmsg archive`` (``--no-history``: expire) and ``pgmsg purge`` (pg_cron runs the
same functions every minute, in batches)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta

import click

from pgmsg.cli.context import AppContext, confirm, json_option, pass_app, yes_option
from pgmsg.cli.durations import DURATION, describe_duration
from pgmsg.cli.output import emit
from pgmsg.client import Client

DEFAULT_ARCHIVE_BATCH = 10000
DEFAULT_PURGE_BATCH = 50000


def run_batches(
    client: Client, task: str, older_than: timedelta, batch: int, progress: Callable[[int], None]
) -> int:
    """Archive, expire or purge batch after batch until none is left; each batch commits on its
    own, so an interrupted run keeps what it did and the next run carries on."""
    one_batch = {
        "archive": client.archive_messages,
        "expire": client.expire_messages,
        "purge": client.purge_deliveries,
    }[task]
    done = 0
    while moved := one_batch(older_than, batch):
        done += moved
        progress(moved)
    return done


def _run_with_bar(
    app: AppContext, task: str, older_than: timedelta, batch: int, estimate: int, label: str
) -> int:
    client = app.client()
    # The bar goes to stderr so stdout carries only the result (and stays valid JSON).
    with click.progressbar(
        length=max(estimate, 1), label=label, show_eta=True, show_pos=True, file=sys.stderr
    ) as bar:
        return run_batches(client, task, older_than, batch, bar.update)


@click.command()
@click.option(
    "--older-than",
    type=DURATION,
    required=True,
    help="Archive finished messages created longer ago than this (30d, 12h, '90 days').",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=DEFAULT_ARCHIVE_BATCH,
    show_default=True,
    help="Messages moved per transaction.",
)
@click.option(
    "--no-history",
    is_flag=True,
    help="Delete the messages with their deliveries and attempts instead of moving them to the "
    "history tables (as housekeeping_keep_history: false does); asks first.",
)
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
    estimate = app.client().count_archivable(older_than)
    if no_history and estimate:
        confirm(
            f"Delete {estimate} finished message(s) older than {describe_duration(older_than)} with their "
            "deliveries and attempts, keeping no history? This cannot be undone.",
            yes,
        )
    function, label = ("expire", "Deleting messages") if no_history else ("archive", "Archiving messages")
    moved = _run_with_bar(app, function, older_than, batch, estimate, label) if estimate else 0
    done = "deleted" if no_history else "archived"
    emit(
        {done: moved, "estimated": estimate}
        if app.json
        else f"{done} {moved} message(s) older than {describe_duration(older_than)} "
        "with their deliveries and attempts",
        app.json,
    )


@click.command()
@click.option(
    "--older-than",
    type=DURATION,
    required=True,
    help="Delete delivered/notified deliveries finished longer ago than this (7d, '14 days').",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=DEFAULT_PURGE_BATCH,
    show_default=True,
    help="Deliveries deleted per transaction.",
)
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
    estimate = app.client().count_purgeable(older_than)
    if estimate == 0:
        emit({"purged": 0} if app.json else "no deliveries to purge", app.json)
        return
    confirm(
        f"Delete {estimate} delivered/notified deliveries finished more than "
        f"{describe_duration(older_than)} ago? This cannot be undone.",
        yes,
    )
    purged = _run_with_bar(app, "purge", older_than, batch, estimate, "Purging deliveries")
    emit({"purged": purged} if app.json else f"purged {purged} deliveries", app.json)
