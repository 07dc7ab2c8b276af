"""``pgmsg health``: is the messaging system doing its job? One line per check, and the exit
code of the monitoring-plugins convention (Nagios, Icinga, Sensu): 0 ok, 1 warning,
2 critical, 3 unknown (the database is unreachable, or the check could not judge: a usage
error, a database error).

The checks themselves are in :mod:`pgmsg.cli.health_checks`; this module takes the
thresholds from the options and renders the result."""

from __future__ import annotations

from dataclasses import asdict

import click
import psycopg

from pgmsg.cli.context import AppContext, json_option, pass_app, unreachable
from pgmsg.cli.health_checks import CHECKS, SEVERITY, Thresholds, overall, run_checks
from pgmsg.cli.output import emit
from pgmsg.errors import ConnectionFailed, describe

#: Exit code of ``pgmsg health`` when it cannot tell (monitoring-plugins' UNKNOWN).
EXIT_UNKNOWN = 3


class MonitoringCommand(click.Command):
    """A command for monitoring: any failure to judge exits UNKNOWN (the root group applies
    ``error_exit_code``), never 2, which monitoring reads as CRITICAL."""

    error_exit_code = EXIT_UNKNOWN


@click.command(cls=MonitoringCommand)
@click.option(
    "--max-pending-age",
    type=click.FloatRange(min=0),
    default=300,
    show_default=True,
    help="Warn when a client's oldest pending/processing delivery is older than this (seconds).",
)
@click.option(
    "--critical-pending-age",
    type=click.FloatRange(min=0),
    default=3600,
    show_default=True,
    help="Critical when a client's oldest pending/processing delivery is older than this (seconds).",
)
@click.option(
    "--heartbeat-age",
    type=click.FloatRange(min=0),
    default=60,
    show_default=True,
    help="Warn when no dispatcher reported in within this many seconds (and one is needed).",
)
@click.option(
    "--idle-transaction-age",
    type=click.FloatRange(min=0),
    default=60,
    show_default=True,
    help="Warn about sessions idle in a transaction for longer than this (seconds).",
)
@click.option(
    "--max-transaction-age",
    type=click.FloatRange(min=0),
    default=300,
    show_default=True,
    help="Warn when a transaction has been open longer than this (seconds).",
)
@click.option(
    "--max-deferred-age",
    type=click.FloatRange(min=0),
    default=60,
    show_default=True,
    help="Warn when a deferred message has waited for the fan-out longer than this (seconds).",
)
@click.option(
    "--max-replication-lag",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="Warn when a replica replays more than this many seconds behind the leader.",
)
@click.option(
    "--max-backup-age",
    type=click.FloatRange(min=0),
    default=26 * 3600,
    show_default=True,
    help="Warn when the last successful backup (full, diff or incr) is older than this (seconds).",
)
@click.option(
    "--critical-backup-age",
    type=click.FloatRange(min=0),
    default=50 * 3600,
    show_default=True,
    help="Critical when the last successful backup is older than this (seconds).",
)
@click.option(
    "--max-backup-check-age",
    type=click.FloatRange(min=0),
    default=2 * 3600,
    show_default=True,
    help="Warn when the last pgbackrest check finished longer ago than this (seconds).",
)
@click.option(
    "--client", "client_id", help="Limit the pending, dead-letter and dispatcher checks to this client."
)
@click.option(
    "--check",
    "only",
    type=click.Choice(list(CHECKS)),
    multiple=True,
    help="Run only this check (repeatable); default all.",
)
@json_option
@pass_app
def health(
    app: AppContext,
    max_pending_age: float,
    critical_pending_age: float,
    heartbeat_age: float,
    idle_transaction_age: float,
    max_transaction_age: float,
    max_deferred_age: float,
    max_replication_lag: float,
    max_backup_age: float,
    critical_backup_age: float,
    max_backup_check_age: float,
    client_id: str | None,
    only: tuple[str, ...],
) -> None:
    """Check the messaging system; exit 0 ok, 1 warning, 2 critical, 3 unknown.

    \b
    Exit codes (the monitoring-plugins convention):
      0  ok        every check passed
      1  warning   at least one check warns, none is critical or unknown
      2  critical  at least one check is critical
      3  unknown   no verdict: the database is unreachable (or was lost), a
                   check could not run (e.g. no privilege), or a usage error
                   (bad option or threshold); a critical check still exits 2

    \b
    Checks:
      extensions    http, pg_cron and pgcrypto are installed
      cron          every pgmsg-* pg_cron job is active and its last run succeeded
      dispatcher    a dispatcher reported in recently, if http subscriptions need one
      pending       age of each client's oldest pending/processing delivery
      dead-letters  no dead letters are waiting
      deferred      deferred messages reach the fan-out in time, and none failed
      transactions  no session idles in a transaction, no transaction runs too long
      cluster       the node is writable; on a Patroni leader, replicas stream, one is
                    synchronous, none lags more than --max-replication-lag
      backups       age of the last good backup, result of the last pgbackrest check

    \b
    Examples:
      pgmsg health
      pgmsg health --max-pending-age 60 --critical-pending-age 600 --heartbeat-age 30
      pgmsg health --client webhook-server --check pending --check dead-letters
      pgmsg health --check backups --max-backup-age 90000 --critical-backup-age 180000
      pgmsg health --json
    """
    if critical_pending_age < max_pending_age:
        raise click.BadParameter(
            "must not be lower than --max-pending-age", param_hint="--critical-pending-age"
        )
    if critical_backup_age < max_backup_age:
        raise click.BadParameter(
            "must not be lower than --max-backup-age", param_hint="--critical-backup-age"
        )
    limits = Thresholds(
        max_pending_age,
        critical_pending_age,
        heartbeat_age,
        idle_transaction_age,
        max_transaction_age,
        max_deferred_age,
        max_replication_lag,
        max_backup_age,
        critical_backup_age,
        max_backup_check_age,
    )
    try:
        checks = run_checks(app.client(), limits, client_id=client_id, only=only)
    except ConnectionFailed as exc:
        # Lost during a check: libpq's reason, as when the first connection fails.
        reason = describe(exc.__cause__) if isinstance(exc.__cause__, psycopg.Error) else exc
        raise unreachable(reason, EXIT_UNKNOWN) from exc
    status = overall(checks)
    if app.json:
        emit({"status": status, "checks": [asdict(c) for c in checks]}, True)
    else:
        width = max((len(c.name) for c in checks), default=0)
        for c in checks:
            click.echo(f"{c.status:<8} {c.name.ljust(width)}  {c.detail}")
        click.echo(f"overall: {status}")
    click.get_current_context().exit(SEVERITY[status])
