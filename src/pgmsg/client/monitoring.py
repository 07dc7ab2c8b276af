"""What monitoring reads: extensions, pg_cron jobs, dispatcher heartbeats, waiting and dead
deliveries, the deferred backlog, long transactions, replication and backups.

Plain readings; :mod:`pgmsg.client.health` judges them against thresholds. Ages are
measured by the database's clock, in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgmsg.client.connection import ClientCore
from pgmsg.errors import translated

EXTENSION_VERSIONS = "SELECT extname, extversion FROM pg_extension WHERE extname = ANY (%s)"

PG_CRON_INSTALLED = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') AS yes"

#: pgmsg_cron_jobs() (SECURITY DEFINER) shows the jobs to roles that may not read cron.job.
CRON_JOBS = (
    "SELECT jobname, schedule, active, last_status AS status, last_start AS start_time, "
    "last_message AS return_message FROM pgmsg_cron_jobs() WHERE starts_with(jobname, %s)"
)

#: Active http subscriptions the dispatcher pushes (of one client, or all).
DISPATCHER_SUBSCRIPTIONS = (
    "SELECT count(*) AS n FROM subscriptions WHERE active AND delivery_mode = 'http' "
    "AND push_mode = 'dispatcher' AND (%(c)s::text IS NULL OR client_id = %(c)s)"
)

#: Dispatchers that reported in within a number of seconds, and the newest heartbeat.
DISPATCHER_HEARTBEATS = """
        SELECT count(*) FILTER (WHERE now() - last_seen <= make_interval(secs => %(limit)s)) AS alive,
               min(extract(epoch FROM now() - last_seen))::float8 AS newest_age,
               (array_agg(name ORDER BY last_seen DESC))[1] AS newest
          FROM pgmsg_dispatchers
        """

#: Per client: deliveries pending or processing, and the age of the oldest.
WAITING_BY_CLIENT = """
        SELECT client_id, count(*) AS waiting,
               extract(epoch FROM now() - min(created_at))::float8 AS oldest_age
          FROM message_delivery
         WHERE status IN ('pending', 'processing') AND (%(c)s::text IS NULL OR client_id = %(c)s)
         GROUP BY client_id
         ORDER BY oldest_age DESC, client_id
        """

DEAD_LETTERS_BY_CLIENT = (
    "SELECT client_id, count(*) AS n FROM message_delivery WHERE status = 'dead' "
    "AND (%(c)s::text IS NULL OR client_id = %(c)s) GROUP BY client_id "
    "ORDER BY count(*) DESC, client_id"
)

DEFERRED_BACKLOG = (
    "SELECT waiting, failed, extract(epoch FROM now() - oldest_waiting)::float8 AS oldest_age "
    "FROM pgmsg_deferred_status()"
)

#: Other client sessions idle in a transaction for over a number of seconds, and the
#: oldest open transaction.
TRANSACTIONS = """
        SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%%'
                                  AND now() - state_change > make_interval(secs => %(idle)s)) AS idle,
               string_agg(pid::text || coalesce('/' || usename, ''), ', ')
                   FILTER (WHERE state LIKE 'idle in transaction%%'
                             AND now() - state_change > make_interval(secs => %(idle)s)) AS idle_pids,
               max(extract(epoch FROM now() - xact_start))::float8 AS oldest_age,
               (array_agg(pid ORDER BY xact_start) FILTER (WHERE xact_start IS NOT NULL))[1] AS oldest_pid
          FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
        """

CLUSTER_STATUS = "SELECT * FROM pgmsg_cluster_status()"

#: The backup runs pg_cron starts, as recorded (migration 027; roles/pgbackrest).
BACKUP_STATUS = (
    "SELECT kind, last_success_label, last_ok, last_error, "
    "extract(epoch FROM now() - last_success_at)::float8 AS success_age, "
    "extract(epoch FROM now() - last_finished_at)::float8 AS finished_age, "
    "last_finished_at FROM pgmsg_backup_status"
)


class MonitoringMixin(ClientCore):
    """Readings of the system's state, for health checks and monitoring."""

    def _read(self, what: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
        with translated(f"reading {what}"), self._connection() as conn:
            return conn.execute(statement, params).fetchall()

    def extension_versions(self, names: Sequence[str]) -> dict[str, str]:
        """The installed version of each of the named extensions that is installed."""
        rows = self._read("the installed extensions", EXTENSION_VERSIONS, (list(names),))
        return {r["extname"]: r["extversion"] for r in rows}

    def pg_cron_installed(self) -> bool:
        """Whether the pg_cron extension is installed in this database."""
        [row] = self._read("the installed extensions", PG_CRON_INSTALLED)
        return bool(row["yes"])

    def cron_jobs(self, prefix: str) -> list[dict[str, Any]]:
        """pg_cron jobs whose name starts with ``prefix``: jobname, schedule, active, and their
        last run's status, start_time and return_message."""
        return self._read("the pg_cron jobs", CRON_JOBS, (prefix,))

    def dispatcher_subscription_count(self, client_id: str | None = None) -> int:
        """Active http subscriptions (of ``client_id``, or all) that wait for a dispatcher."""
        [row] = self._read("the http subscriptions", DISPATCHER_SUBSCRIPTIONS, {"c": client_id})
        return int(row["n"])

    def dispatcher_heartbeats(self, max_age: float) -> dict[str, Any]:
        """``alive``: dispatchers that reported in within ``max_age`` seconds; ``newest``: the
        name of the one that reported last (None when none ever did), ``newest_age`` its age."""
        [row] = self._read("the dispatcher heartbeats", DISPATCHER_HEARTBEATS, {"limit": max_age})
        return row

    def waiting_deliveries(self, client_id: str | None = None) -> list[dict[str, Any]]:
        """Per client (or only ``client_id``): ``waiting`` deliveries (pending or processing)
        and the ``oldest_age`` of them; the longest-waiting client first."""
        return self._read("the waiting deliveries", WAITING_BY_CLIENT, {"c": client_id})

    def dead_letter_counts(self, client_id: str | None = None) -> list[dict[str, Any]]:
        """Per client (or only ``client_id``): how many dead letters (``n``), most first."""
        return self._read("the dead letters", DEAD_LETTERS_BY_CLIENT, {"c": client_id})

    def deferred_backlog(self) -> dict[str, Any]:
        """Deferred messages ``waiting`` and ``failed``, and the ``oldest_age`` of the waiting."""
        [row] = self._read("the deferred messages", DEFERRED_BACKLOG)
        return row

    def transaction_ages(self, idle_limit: float) -> dict[str, Any]:
        """Other sessions ``idle`` in a transaction for over ``idle_limit`` seconds (``idle_pids``:
        pid/user of each), and the ``oldest_age`` and ``oldest_pid`` of the open transactions."""
        [row] = self._read("the open transactions", TRANSACTIONS, {"idle": idle_limit})
        return row

    def cluster_status(self) -> list[dict[str, Any]]:
        """pgmsg_cluster_status(): this node (leader or replica, timeline) and, on a Patroni
        leader, one row per replica with its state and lag."""
        return self._read("the cluster status", CLUSTER_STATUS)

    def backup_status(self) -> dict[str, dict[str, Any]]:
        """The last backup (full, diff, incr) and pgbackrest check runs by kind, with the ages
        of the last success and the last finished run."""
        return {r["kind"]: r for r in self._read("the backup status", BACKUP_STATUS)}
