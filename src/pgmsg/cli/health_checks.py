"""The checks of ``pgmsg health``: the client's readings of the system judged against
thresholds, one :class:`Check` (ok, warning, critical or unknown, and why) per finding."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from pgmsg.cli.output import format_seconds
from pgmsg.client import Client, is_connection_error
from pgmsg.errors import ConnectionFailed, PgmsgError, describe

OK, WARNING, CRITICAL, UNKNOWN = "ok", "warning", "critical", "unknown"
#: Exit codes (monitoring-plugins); a check that could not run makes the verdict unknown, unless one is critical.
SEVERITY = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}
_PRECEDENCE = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}

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


def check_extensions(client: Client, _limits: Thresholds, _client: str | None) -> list[Check]:
    versions = client.extension_versions(REQUIRED_EXTENSIONS)
    missing = [name for name in REQUIRED_EXTENSIONS if name not in versions]
    present = ", ".join(f"{name} {versions[name]}" for name in REQUIRED_EXTENSIONS if name in versions)
    if missing:
        return [
            Check(
                "extensions",
                CRITICAL,
                f"missing {', '.join(missing)}"
                + (f" (present: {present})" if present else "")
                + "; apply the migrations (pgmsg migrate)",
            )
        ]
    return [Check("extensions", OK, present)]


def check_cron(client: Client, _limits: Thresholds, _client: str | None) -> list[Check]:
    if not client.pg_cron_installed():
        return [Check("cron", CRITICAL, "pg_cron is not installed here; housekeeping does not run")]
    rows = client.cron_jobs(CRON_JOB_PREFIX)
    if not rows:
        return [
            Check(
                "cron",
                CRITICAL,
                f"no {CRON_JOB_PREFIX}* job is scheduled; housekeeping does not run "
                "(deploy the housekeeping role)",
            )
        ]
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


def check_dispatcher(client: Client, limits: Thresholds, client_id: str | None) -> list[Check]:
    waiting = client.dispatcher_subscription_count(client_id)
    if waiting == 0:
        return [Check("dispatcher", OK, "no active dispatcher-mode http subscription needs one")]
    beat = client.dispatcher_heartbeats(limits.heartbeat)
    if beat is None or beat["newest"] is None:
        return [
            Check(
                "dispatcher",
                WARNING,
                f"no dispatcher has ever reported in; {waiting} http "
                "subscription(s) wait for pgmsg-dispatcher",
            )
        ]
    if beat["alive"] == 0:
        return [
            Check(
                "dispatcher",
                WARNING,
                f"newest heartbeat ({beat['newest']}) is {format_seconds(beat['newest_age'])} old, "
                f"over {format_seconds(limits.heartbeat)}; {waiting} http subscription(s) are not pushed",
            )
        ]
    return [
        Check(
            "dispatcher",
            OK,
            f"{beat['alive']} alive, newest heartbeat "
            f"{format_seconds(beat['newest_age'])} ago ({beat['newest']})",
        )
    ]


def check_pending(client: Client, limits: Thresholds, client_id: str | None) -> list[Check]:
    rows = client.waiting_deliveries(client_id)
    if not rows:
        return [
            Check(
                "pending",
                OK,
                "no pending or processing deliveries" + (f" for {client_id!r}" if client_id else ""),
            )
        ]
    checks = []
    for row in rows:
        age = row["oldest_age"]
        status = (
            CRITICAL if age > limits.pending_critical else WARNING if age > limits.pending_warning else OK
        )
        limit = {
            CRITICAL: limits.pending_critical,
            WARNING: limits.pending_warning,
            OK: limits.pending_warning,
        }
        relation = "over" if status != OK else "within"
        checks.append(
            Check(
                f"pending {row['client_id']}",
                status,
                f"{row['waiting']} waiting, oldest {format_seconds(age)} old "
                f"({relation} {format_seconds(limit[status])})",
            )
        )
    return checks


def check_dead_letters(client: Client, _limits: Thresholds, client_id: str | None) -> list[Check]:
    rows = client.dead_letter_counts(client_id)
    total = sum(r["n"] for r in rows)
    if total == 0:
        return [Check("dead-letters", OK, "none")]
    per_client = ", ".join(f"{r['client_id']}: {r['n']}" for r in rows[:5]) + (
        ", ..." if len(rows) > 5 else ""
    )
    return [
        Check(
            "dead-letters",
            WARNING,
            f"{total} dead letter(s) ({per_client}); see pgmsg dead-letters list, then redrive",
        )
    ]


def check_deferred(client: Client, limits: Thresholds, _client: str | None) -> list[Check]:
    row = client.deferred_backlog()
    checks = []
    age = row["oldest_age"]
    if not row["waiting"]:
        checks.append(Check("deferred", OK, "no deferred message waits for the fan-out"))
    elif age > limits.deferred:
        status = CRITICAL if age > limits.pending_critical else WARNING
        checks.append(
            Check(
                "deferred",
                status,
                f"{row['waiting']} deferred message(s) waiting, the oldest {format_seconds(age)} "
                f"(over {format_seconds(limits.deferred)}): is pgmsg-fan-out running?",
            )
        )
    else:
        checks.append(Check("deferred", OK, f"{row['waiting']} waiting, the oldest {format_seconds(age)}"))
    if row["failed"]:
        checks.append(
            Check(
                "deferred-failed",
                WARNING,
                f"{row['failed']} deferred message(s) could not be fanned out; "
                "see pgmsg deferred failed, then retry",
            )
        )
    return checks


def check_transactions(client: Client, limits: Thresholds, _client: str | None) -> list[Check]:
    row = client.transaction_ages(limits.idle_in_transaction)
    checks = []
    if row["idle"]:
        checks.append(
            Check(
                "idle-in-transaction",
                WARNING,
                f"{row['idle']} session(s) idle in a transaction for over "
                f"{format_seconds(limits.idle_in_transaction)} (pid/user {row['idle_pids']}); "
                "they hold locks and keep vacuum from cleaning up",
            )
        )
    else:
        checks.append(
            Check(
                "idle-in-transaction",
                OK,
                f"no session idle in a transaction for over {format_seconds(limits.idle_in_transaction)}",
            )
        )
    age = row["oldest_age"]
    if age is None:
        checks.append(Check("oldest-transaction", OK, "no open transaction"))
    elif age > limits.transaction:
        checks.append(
            Check(
                "oldest-transaction",
                WARNING,
                f"pid {row['oldest_pid']} has been in a transaction for {format_seconds(age)} "
                f"(over {format_seconds(limits.transaction)})",
            )
        )
    else:
        checks.append(Check("oldest-transaction", OK, f"{format_seconds(age)} (pid {row['oldest_pid']})"))
    return checks


def check_cluster(client: Client, limits: Thresholds, _client: str | None) -> list[Check]:
    """The node pgmsg is connected to, and on a Patroni leader its replicas: streaming, which is
    synchronous, how far behind."""
    rows = client.cluster_status()
    first = rows[0]
    node, timeline = first["node"], first["timeline"]
    replicas = [r for r in rows if r["replica"] is not None]
    if not first["is_leader"]:
        return [
            Check(
                "cluster",
                WARNING,
                f"connected to {node}, a read-only replica (timeline {timeline}): "
                "point pgmsg at the leader (HAProxy's primary port)",
            )
        ]
    if node == "single" and not replicas:
        return [Check("cluster", OK, f"single node, timeline {timeline}")]
    streaming = [r for r in replicas if r["replica_state"] == "streaming"]
    sync = [r["replica"] for r in streaming if r["sync_state"] in ("sync", "quorum")]
    detail = (
        f"leader {node}, timeline {timeline}, {len(streaming)} replica(s) streaming, "
        f"synchronous standby: {', '.join(sync) or 'none'}"
    )
    if not streaming:
        checks = [Check("cluster", WARNING, detail + "; commits exist on this node only")]
    elif first["synchronous_standby_names"] and not sync:
        checks = [
            Check(
                "cluster",
                WARNING,
                detail + "; synchronous replication is configured but no standby is in sync",
            )
        ]
    else:
        checks = [Check("cluster", OK, detail)]
    for r in replicas:
        lag = f"{r['lag_bytes'] or 0:.0f} bytes, {r['lag_seconds'] or 0:.1f} s behind"
        lagging = r["replica_state"] != "streaming" or (r["lag_seconds"] or 0) > limits.replication_lag
        checks.append(
            Check(
                f"replica {r['replica']}",
                WARNING if lagging else OK,
                f"{r['replica_state']} ({r['sync_state']}), {lag}",
            )
        )
    return checks


BACKUP_KINDS = ("full", "diff", "incr")


def check_backups(client: Client, limits: Thresholds, _client: str | None) -> list[Check]:
    """The last good backup's age and the last `pgbackrest check`, as the runs pg_cron starts
    recorded them (pgmsg_backup_status, migration 027; roles/pgbackrest)."""
    rows = client.backup_status()
    return [_backup_age(rows, limits), _backup_check(rows.get("check"), limits)]


def _backup_age(rows: dict[str, dict[str, Any]], limits: Thresholds) -> Check:
    backups = [rows[k] for k in BACKUP_KINDS if k in rows and rows[k]["last_finished_at"] is not None]
    if not backups:
        return Check(
            "backup",
            WARNING,
            "no backup has been recorded here: backups are off (pgbackrest_enabled) or have never run",
        )
    good = [b for b in backups if b["success_age"] is not None]
    latest = min(backups, key=lambda b: b["finished_age"])
    failed = (
        ""
        if latest["last_ok"]
        else (
            f"; the last {latest['kind']} backup failed "
            f"{format_seconds(latest['finished_age'])} ago: {_short(latest['last_error'])}"
        )
    )
    if not good:
        return Check("backup", CRITICAL, f"no backup has succeeded{failed}")
    newest = min(good, key=lambda b: b["success_age"])
    age = newest["success_age"]
    detail = f"last good backup {format_seconds(age)} ago ({newest['kind']} {newest['last_success_label']})"
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
        return Check(
            "backup-check",
            CRITICAL,
            f"pgbackrest check failed {format_seconds(age)} ago: {_short(row['last_error'])}; "
            "WAL may not reach the repository (see pg_stat_archiver)",
        )
    if age > limits.backup_check:
        return Check(
            "backup-check",
            WARNING,
            f"last pgbackrest check passed {format_seconds(age)} ago, "
            f"over {format_seconds(limits.backup_check)}: is its pg_cron job running?",
        )
    return Check("backup-check", OK, f"pgbackrest check passed {format_seconds(age)} ago")


def _short(text: str | None) -> str:
    return " ".join((text or "").split())[:300]


CHECKS: dict[str, Callable[[Client, Thresholds, str | None], list[Check]]] = {
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


def run_checks(
    client: Client, limits: Thresholds, *, client_id: str | None = None, only: Sequence[str] = ()
) -> list[Check]:
    """Run the chosen checks (all by default). A check that cannot run is unknown, not a crash;
    a lost connection propagates (the caller reports the database as unreachable)."""
    results: list[Check] = []
    for name, check in CHECKS.items():
        if only and name not in only:
            continue
        try:
            results.extend(check(client, limits, client_id))
        except PgmsgError as exc:
            cause = exc.__cause__
            if isinstance(exc, ConnectionFailed) and (
                not isinstance(cause, psycopg.Error) or is_connection_error(cause)
            ):
                raise
            reason = describe(cause) if isinstance(cause, psycopg.Error) else str(exc)
            results.append(Check(name, UNKNOWN, f"could not check: {reason}"))
    return results


def overall(checks: Sequence[Check]) -> str:
    return max((c.status for c in checks), key=_PRECEDENCE.__getitem__, default=OK)


def _when(value: Any) -> str:
    return value.isoformat(sep=" ", timespec="seconds") if value is not None else "?"
