"""``pgmsg health``: is the messaging system doing its job? One line per check, and an
exit code monitoring understands: 0 ok, 1 warning, 2 critical, 3 database unreachable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import click
import psycopg

from pgmsg.cli.context import (EXIT_UNREACHABLE, AppContext, CommandError, connection_failed_message,
                               is_connection_error, json_option, pass_app)
from pgmsg.cli.output import emit, format_seconds
from pgmsg.errors import ConnectionFailed, describe

Conn = psycopg.Connection[dict[str, Any]]

OK, WARNING, CRITICAL = "ok", "warning", "critical"
SEVERITY = {OK: 0, WARNING: 1, CRITICAL: 2}

#: Extensions the schema depends on: http (in-transaction push), pg_cron
#: (housekeeping), pgcrypto (signing secrets and signatures).
REQUIRED_EXTENSIONS = ("http", "pg_cron", "pgcrypto")
CRON_JOB_PREFIX = "pgmsg-"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


@dataclass(frozen=True)
class Thresholds:
    """Limits, in seconds, beyond which a check warns (or is critical)."""

    pending_warning: float = 300
    pending_critical: float = 3600
    heartbeat: float = 60
    idle_in_transaction: float = 60
    transaction: float = 300
    deferred: float = 60
    replication_lag: float = 30
    backup_warning: float = 26 * 3600
    backup_critical: float = 50 * 3600
    backup_check: float = 2 * 3600


def check_extensions(conn: Conn, _limits: Thresholds, _client: str | None) -> list[Check]:
    rows = conn.execute("SELECT extname, extversion FROM pg_extension WHERE extname = ANY (%s)",
                        (list(REQUIRED_EXTENSIONS),)).fetchall()
    versions = {r["extname"]: r["extversion"] for r in rows}
    missing = [name for name in REQUIRED_EXTENSIONS if name not in versions]
    present = ", ".join(f"{name} {versions[name]}" for name in REQUIRED_EXTENSIONS if name in versions)
    if missing:
        return [Check("extensions", CRITICAL, f"missing {', '.join(missing)}"
                      + (f" (present: {present})" if present else "") + "; apply the migrations (pgmsg migrate)")]
    return [Check("extensions", OK, present)]


def check_cron(conn: Conn, _limits: Thresholds, _client: str | None) -> list[Check]:
    installed = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') AS yes").fetchone()
    if not (installed and installed["yes"]):
        return [Check("cron", CRITICAL, "pg_cron is not installed here; housekeeping does not run")]
    # pgmsg_cron_jobs() (SECURITY DEFINER) shows the jobs to roles that may not read cron.job.
    rows = conn.execute(
        "SELECT jobname, schedule, active, last_status AS status, last_start AS start_time, "
        "last_message AS return_message FROM pgmsg_cron_jobs() WHERE starts_with(jobname, %s)",
        (CRON_JOB_PREFIX,),
    ).fetchall()
    if not rows:
        return [Check("cron", CRITICAL, f"no {CRON_JOB_PREFIX}* job is scheduled; housekeeping does not run "
                                        "(deploy the housekeeping role)")]
    checks = []
    for job in rows:
        name = f"cron {job['jobname']}"
        if not job["active"]:
            checks.append(Check(name, WARNING, f"job is inactive (schedule {job['schedule']})"))
        elif job["status"] is None:
            checks.append(Check(name, OK, f"scheduled '{job['schedule']}', no run yet"))
        elif job["status"] == "failed":
            message = " ".join((job["return_message"] or "").split())[:200]
            checks.append(Check(name, WARNING, f"last run failed at {_when(job['start_time'])}: {message}"))
        else:
            checks.append(Check(name, OK, f"last run {job['status']} at {_when(job['start_time'])}"))
    return checks


def check_dispatcher(conn: Conn, limits: Thresholds, client_id: str | None) -> list[Check]:
    row = conn.execute(
        "SELECT count(*) AS n FROM subscriptions WHERE active AND delivery_mode = 'http' "
        "AND push_mode = 'dispatcher' AND (%(c)s::text IS NULL OR client_id = %(c)s)",
        {"c": client_id},
    ).fetchone()
    waiting = int(row["n"]) if row else 0
    if waiting == 0:
        return [Check("dispatcher", OK, "no active dispatcher-mode http subscription needs one")]
    beat = conn.execute(
        """
        SELECT count(*) FILTER (WHERE now() - last_seen <= make_interval(secs => %(limit)s)) AS alive,
               min(extract(epoch FROM now() - last_seen))::float8 AS newest_age,
               (array_agg(name ORDER BY last_seen DESC))[1] AS newest
          FROM pgmsg_dispatchers
        """,
        {"limit": limits.heartbeat},
    ).fetchone()
    if beat is None or beat["newest"] is None:
        return [Check("dispatcher", WARNING, f"no dispatcher has ever reported in; {waiting} http "
                                             "subscription(s) wait for pgmsg-dispatcher")]
    if beat["alive"] == 0:
        return [Check("dispatcher", WARNING,
                      f"newest heartbeat ({beat['newest']}) is {format_seconds(beat['newest_age'])} old, "
                      f"over {format_seconds(limits.heartbeat)}; {waiting} http subscription(s) are not pushed")]
    return [Check("dispatcher", OK, f"{beat['alive']} alive, newest heartbeat "
                                    f"{format_seconds(beat['newest_age'])} ago ({beat['newest']})")]


def check_pending(conn: Conn, limits: Thresholds, client_id: str | None) -> list[Check]:
    rows = conn.execute(
        """
        SELECT client_id, count(*) AS waiting,
               extract(epoch FROM now() - min(created_at))::float8 AS oldest_age
          FROM message_delivery
         WHERE status IN ('pending', 'processing') AND (%(c)s::text IS NULL OR client_id = %(c)s)
         GROUP BY client_id
         ORDER BY oldest_age DESC, client_id
        """,
        {"c": client_id},
    ).fetchall()
    if not rows:
        return [Check("pending", OK, "no pending or processing deliveries"
                      + (f" for {client_id!r}" if client_id else ""))]
    checks = []
    for row in rows:
        age = row["oldest_age"]
        status = (CRITICAL if age > limits.pending_critical else WARNING if age > limits.pending_warning else OK)
        limit = {CRITICAL: limits.pending_critical, WARNING: limits.pending_warning, OK: limits.pending_warning}
        relation = "over" if status != OK else "within"
        checks.append(Check(f"pending {row['client_id']}", status,
                            f"{row['waiting']} waiting, oldest {format_seconds(age)} old "
                            f"({relation} {format_seconds(limit[status])})"))
    return checks


def check_dead_letters(conn: Conn, _limits: Thresholds, client_id: str | None) -> list[Check]:
    rows = conn.execute(
        "SELECT client_id, count(*) AS n FROM message_delivery WHERE status = 'dead' "
        "AND (%(c)s::text IS NULL OR client_id = %(c)s) GROUP BY client_id ORDER BY count(*) DESC, client_id",
        {"c": client_id},
    ).fetchall()
    total = sum(r["n"] for r in rows)
    if total == 0:
        return [Check("dead-letters", OK, "none")]
    per_client = ", ".join(f"{r['client_id']}: {r['n']}" for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    return [Check("dead-letters", WARNING, f"{total} dead letter(s) ({per_client}); "
                                           "see pgmsg dead-letters list, then redrive")]


def check_deferred(conn: Conn, limits: Thresholds, _client: str | None) -> list[Check]:
    row = conn.execute(
        "SELECT waiting, failed, extract(epoch FROM now() - oldest_waiting)::float8 AS oldest_age "
        "FROM pgmsg_deferred_status()").fetchone()
    assert row is not None
    checks = []
    age = row["oldest_age"]
    if not row["waiting"]:
        checks.append(Check("deferred", OK, "no deferred message waits for the fan-out"))
    elif age > limits.deferred:
        status = CRITICAL if age > limits.pending_critical else WARNING
        checks.append(Check("deferred", status,
                            f"{row['waiting']} deferred message(s) waiting, the oldest {format_seconds(age)} "
                            f"(over {format_seconds(limits.deferred)}): is pgmsg-fan-out running?"))
    else:
        checks.append(Check("deferred", OK, f"{row['waiting']} waiting, the oldest {format_seconds(age)}"))
    if row["failed"]:
        checks.append(Check("deferred-failed", WARNING,
                            f"{row['failed']} deferred message(s) could not be fanned out; "
                            "see pgmsg deferred failed, then retry"))
    return checks


def check_transactions(conn: Conn, limits: Thresholds, _client: str | None) -> list[Check]:
    row = conn.execute(
        """
        SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%%'
                                  AND now() - state_change > make_interval(secs => %(idle)s)) AS idle,
               string_agg(pid::text || coalesce('/' || usename, ''), ', ')
                   FILTER (WHERE state LIKE 'idle in transaction%%'
                             AND now() - state_change > make_interval(secs => %(idle)s)) AS idle_pids,
               max(extract(epoch FROM now() - xact_start))::float8 AS oldest_age,
               (array_agg(pid ORDER BY xact_start) FILTER (WHERE xact_start IS NOT NULL))[1] AS oldest_pid
          FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
        """,
        {"idle": limits.idle_in_transaction},
    ).fetchone()
    assert row is not None
    checks = []
    if row["idle"]:
        checks.append(Check("idle-in-transaction", WARNING,
                            f"{row['idle']} session(s) idle in a transaction for over "
                            f"{format_seconds(limits.idle_in_transaction)} (pid/user {row['idle_pids']}); "
                            "they hold locks and keep vacuum from cleaning up"))
    else:
        checks.append(Check("idle-in-transaction", OK, "no session idle in a transaction for over "
                            f"{format_seconds(limits.idle_in_transaction)}"))
    age = row["oldest_age"]
    if age is None:
        checks.append(Check("oldest-transaction", OK, "no open transaction"))
    elif age > limits.transaction:
        checks.append(Check("oldest-transaction", WARNING,
                            f"pid {row['oldest_pid']} has been in a transaction for {format_seconds(age)} "
                            f"(over {format_seconds(limits.transaction)})"))
    else:
        checks.append(Check("oldest-transaction", OK, f"{format_seconds(age)} (pid {row['oldest_pid']})"))
    return checks


def check_cluster(conn: Conn, limits: Thresholds, _client: str | None) -> list[Check]:
    """The node pgmsg is connected to, and on a Patroni leader its replicas: streaming, which is
    synchronous, how far behind."""
    rows = conn.execute("SELECT * FROM pgmsg_cluster_status()").fetchall()
    first = rows[0]
    node, timeline = first["node"], first["timeline"]
    replicas = [r for r in rows if r["replica"] is not None]
    if not first["is_leader"]:
        return [Check("cluster", WARNING, f"connected to {node}, a read-only replica (timeline {timeline}): "
                      "point pgmsg at the leader (HAProxy's primary port)")]
    if node == "single" and not replicas:
        return [Check("cluster", OK, f"single node, timeline {timeline}")]
    streaming = [r for r in replicas if r["replica_state"] == "streaming"]
    sync = [r["replica"] for r in streaming if r["sync_state"] in ("sync", "quorum")]
    detail = (f"leader {node}, timeline {timeline}, {len(streaming)} replica(s) streaming, "
              f"synchronous standby: {', '.join(sync) or 'none'}")
    if not streaming:
        checks = [Check("cluster", WARNING, detail + "; commits exist on this node only")]
    elif first["synchronous_standby_names"] and not sync:
        checks = [Check("cluster", WARNING, detail + "; synchronous replication is configured but no standby is in sync")]
    else:
        checks = [Check("cluster", OK, detail)]
    for r in replicas:
        lag = f"{r['lag_bytes'] or 0:.0f} bytes, {r['lag_seconds'] or 0:.1f} s behind"
        lagging = r["replica_state"] != "streaming" or (r["lag_seconds"] or 0) > limits.replication_lag
        checks.append(Check(f"replica {r['replica']}", WARNING if lagging else OK,
                            f"{r['replica_state']} ({r['sync_state']}), {lag}"))
    return checks


BACKUP_KINDS = ("full", "diff", "incr")


def check_backups(conn: Conn, limits: Thresholds, _client: str | None) -> list[Check]:
    """The last good backup's age and the last `pgbackrest check`, as the runs pg_cron starts
    recorded them (pgmsg_backup_status, migration 027; roles/pgbackrest)."""
    rows = {r["kind"]: r for r in conn.execute(
        "SELECT kind, last_success_label, last_ok, last_error, "
        "extract(epoch FROM now() - last_success_at)::float8 AS success_age, "
        "extract(epoch FROM now() - last_finished_at)::float8 AS finished_age, "
        "last_finished_at FROM pgmsg_backup_status").fetchall()}
    return [_backup_age(rows, limits), _backup_check(rows.get("check"), limits)]


def _backup_age(rows: dict[str, dict[str, Any]], limits: Thresholds) -> Check:
    backups = [rows[k] for k in BACKUP_KINDS if k in rows and rows[k]["last_finished_at"] is not None]
    if not backups:
        return Check("backup", WARNING, "no backup has been recorded here: backups are off "
                                        "(pgbackrest_enabled) or have never run")
    good = [b for b in backups if b["success_age"] is not None]
    latest = min(backups, key=lambda b: b["finished_age"])
    failed = "" if latest["last_ok"] else (f"; the last {latest['kind']} backup failed "
                                           f"{format_seconds(latest['finished_age'])} ago: {_short(latest['last_error'])}")
    if not good:
        return Check("backup", CRITICAL, f"no backup has succeeded{failed}")
    newest = min(good, key=lambda b: b["success_age"])
    age = newest["success_age"]
    detail = (f"last good backup {format_seconds(age)} ago ({newest['kind']} {newest['last_success_label']})")
    if age > limits.backup_critical:
        return Check("backup", CRITICAL, f"{detail}, over {format_seconds(limits.backup_critical)}{failed}")
    if age > limits.backup_warning:
        return Check("backup", WARNING, f"{detail}, over {format_seconds(limits.backup_warning)}{failed}")
    return Check("backup", WARNING if failed else OK, detail + failed)


def _backup_check(row: dict[str, Any] | None, limits: Thresholds) -> Check:
    if row is None or row["last_finished_at"] is None:
        return Check("backup-check", WARNING, "pgbackrest check has not run here")
    age = row["finished_age"]
    if not row["last_ok"]:
        return Check("backup-check", CRITICAL,
                     f"pgbackrest check failed {format_seconds(age)} ago: {_short(row['last_error'])}; "
                     "WAL may not reach the repository (see pg_stat_archiver)")
    if age > limits.backup_check:
        return Check("backup-check", WARNING, f"last pgbackrest check passed {format_seconds(age)} ago, "
                                              f"over {format_seconds(limits.backup_check)}: is its pg_cron job running?")
    return Check("backup-check", OK, f"pgbackrest check passed {format_seconds(age)} ago")


def _short(text: str | None) -> str:
    return " ".join((text or "").split())[:300]


CHECKS: dict[str, Callable[[Conn, Thresholds, str | None], list[Check]]] = {
    "extensions": check_extensions,
    "cron": check_cron,
    "dispatcher": check_dispatcher,
    "pending": check_pending,
    "dead-letters": check_dead_letters,
    "deferred": check_deferred,
    "transactions": check_transactions,
    "cluster": check_cluster,
    "backups": check_backups,
}


def run_checks(conn: Conn, limits: Thresholds, *, client_id: str | None = None,
               only: Sequence[str] = ()) -> list[Check]:
    """Run the chosen checks (all by default). A check that cannot run is a warning, not a crash;
    a lost connection propagates (the caller reports the database as unreachable)."""
    results: list[Check] = []
    for name, check in CHECKS.items():
        if only and name not in only:
            continue
        try:
            results.extend(check(conn, limits, client_id))
        except psycopg.Error as exc:
            if is_connection_error(exc):
                raise
            results.append(Check(name, WARNING, f"could not check: {describe(exc)}"))
    return results


def overall(checks: Sequence[Check]) -> str:
    return max((c.status for c in checks), key=SEVERITY.__getitem__, default=OK)


def _when(value: Any) -> str:
    return value.isoformat(sep=" ", timespec="seconds") if value is not None else "?"


@click.command()
@click.option("--max-pending-age", type=click.FloatRange(min=0), default=300, show_default=True,
              help="Warn when a client's oldest pending/processing delivery is older than this (seconds).")
@click.option("--critical-pending-age", type=click.FloatRange(min=0), default=3600, show_default=True,
              help="Critical when a client's oldest pending/processing delivery is older than this (seconds).")
@click.option("--heartbeat-age", type=click.FloatRange(min=0), default=60, show_default=True,
              help="Warn when no dispatcher reported in within this many seconds (and one is needed).")
@click.option("--idle-transaction-age", type=click.FloatRange(min=0), default=60, show_default=True,
              help="Warn about sessions idle in a transaction for longer than this (seconds).")
@click.option("--max-transaction-age", type=click.FloatRange(min=0), default=300, show_default=True,
              help="Warn when a transaction has been open longer than this (seconds).")
@click.option("--max-deferred-age", type=click.FloatRange(min=0), default=60, show_default=True,
              help="Warn when a deferred message has waited for the fan-out longer than this (seconds).")
@click.option("--max-replication-lag", type=click.FloatRange(min=0), default=30, show_default=True,
              help="Warn when a replica replays more than this many seconds behind the leader.")
@click.option("--max-backup-age", type=click.FloatRange(min=0), default=26 * 3600, show_default=True,
              help="Warn when the last successful backup (full, diff or incr) is older than this (seconds).")
@click.option("--critical-backup-age", type=click.FloatRange(min=0), default=50 * 3600, show_default=True,
              help="Critical when the last successful backup is older than this (seconds).")
@click.option("--max-backup-check-age", type=click.FloatRange(min=0), default=2 * 3600, show_default=True,
              help="Warn when the last pgbackrest check finished longer ago than this (seconds).")
@click.option("--client", "client_id",
              help="Limit the pending, dead-letter and dispatcher checks to this client.")
@click.option("--check", "only", type=click.Choice(list(CHECKS)), multiple=True,
              help="Run only this check (repeatable); default all.")
@json_option
@pass_app
def health(app: AppContext, max_pending_age: float, critical_pending_age: float, heartbeat_age: float,
           idle_transaction_age: float, max_transaction_age: float, max_deferred_age: float,
           max_replication_lag: float, max_backup_age: float, critical_backup_age: float,
           max_backup_check_age: float, client_id: str | None,
           only: tuple[str, ...]) -> None:
    """Check the messaging system; exit 0 ok, 1 warning, 2 critical, 3 database unreachable.

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
        raise click.BadParameter("must not be lower than --max-pending-age", param_hint="--critical-pending-age")
    if critical_backup_age < max_backup_age:
        raise click.BadParameter("must not be lower than --max-backup-age", param_hint="--critical-backup-age")
    limits = Thresholds(max_pending_age, critical_pending_age, heartbeat_age, idle_transaction_age,
                        max_transaction_age, max_deferred_age, max_replication_lag, max_backup_age,
                        critical_backup_age, max_backup_check_age)
    try:
        checks = run_checks(app.connection(), limits, client_id=client_id, only=only)
    except ConnectionFailed as exc:
        raise CommandError(connection_failed_message(exc), EXIT_UNREACHABLE) from exc
    except psycopg.Error as exc:
        if not is_connection_error(exc):
            raise
        raise CommandError(connection_failed_message(describe(exc)), EXIT_UNREACHABLE) from exc
    status = overall(checks)
    if app.json:
        emit({"status": status, "checks": [asdict(c) for c in checks]}, True)
    else:
        width = max((len(c.name) for c in checks), default=0)
        for c in checks:
            click.echo(f"{c.status:<8} {c.name.ljust(width)}  {c.detail}")
        click.echo(f"overall: {status}")
    click.get_current_context().exit(SEVERITY[status])
