"""Sending again and housekeeping: redrive dead letters, replay, re-send failed HTTP pushes,
retry deferred messages, archive, expire and purge."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pgmsg.client.connection import ClientCore
from pgmsg.errors import InvalidInput, shown, translated

#: The cap retry_failed_http_push() applies unless told otherwise.
DEFAULT_MAX_RETRIES = 10

REDRIVE = "SELECT pgmsg_redrive(%s, %s) AS n"

REPLAY = "SELECT pgmsg_replay(%s, %s, %s, %s) AS n"

RETRY_DEFERRED = "SELECT pgmsg_retry_deferred(%s::bigint[]) AS retried"

#: Re-send failed http pushes (one client's, or all; created within an interval; or named by id,
#: whose retry count is then not capped): at most 50 per call, none started after 120 s (029).
RETRY_FAILED_HTTP_PUSH = (
    "SELECT * FROM retry_failed_http_push(%s::text, %s::integer, %s::interval, %s::bigint[])"
)

#: What retry_failed_http_push() would take with the same arguments (its selection in
#: sql/schema/http.sql, without the cap of 50): counted to ask the operator first.
COUNT_FAILED_HTTP_PUSHES = """
            SELECT count(*) AS n FROM message_delivery md
             WHERE md.status = 'failed' AND md.delivery_mode = 'http'
               AND (%(client)s::text IS NULL OR md.client_id = %(client)s::text)
               AND (%(since)s::interval IS NULL OR md.created_at >= now() - %(since)s::interval)
               AND (%(ids)s::bigint[] IS NULL AND md.retry_count < %(max)s::integer
                    OR md.id = ANY (%(ids)s::bigint[]))
            """

#: The database's clock an interval ago.
TIME_AGO = "SELECT now() - %s::interval AS at"

#: Messages pgmsg_archive_messages would move now (the same condition).
COUNT_ARCHIVABLE = """
            SELECT count(*) AS n FROM messages m
             WHERE m.created_at < now() - %s::interval
               AND NOT EXISTS (SELECT 1 FROM message_delivery d
                                WHERE d.message_id = m.id AND d.status IN ('pending', 'processing'))
            """
#: Deliveries pgmsg_purge_deliveries would delete now (the same condition).
COUNT_PURGEABLE = (
    "SELECT count(*) AS n FROM message_delivery WHERE status IN ('delivered', 'notified') "
    "AND coalesce(delivered_at, created_at) < now() - %s::interval"
)
ARCHIVE_MESSAGES = "SELECT pgmsg_archive_messages(%s::interval, %s) AS n"
EXPIRE_MESSAGES = "SELECT pgmsg_expire_messages(%s::interval, %s) AS n"
PURGE_DELIVERIES = "SELECT pgmsg_purge_deliveries(%s::interval, %s) AS n"


class OperationsMixin(ClientCore):
    """Deliver again, and clean up what is finished."""

    def redrive(self, client_id: str | None = None, delivery_ids: Iterable[int] | None = None) -> int:
        """Send dead letters round again (attempts reset); returns how many."""
        ids = None if delivery_ids is None else list(delivery_ids)
        with translated("redriving dead letters"), self._connection() as conn:
            row = conn.execute(REDRIVE, (client_id, ids)).fetchone()
        assert row is not None
        return int(row["n"])

    def replay(
        self,
        client_id: str,
        *,
        from_message_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """Deliver a client's messages again, from a message id or in a time window."""
        with translated(f"replaying messages to {client_id!r}"), self._connection() as conn:
            row = conn.execute(REPLAY, (client_id, from_message_id, since, until)).fetchone()
        assert row is not None
        return int(row["n"])

    def retry_deferred(self, message_ids: Iterable[int] | None = None) -> int:
        """Give failed deferred messages (all, or these ids) back to the worker; how many."""
        ids = None if message_ids is None else list(message_ids)
        for i in ids or ():
            if not isinstance(i, int) or isinstance(i, bool):
                raise InvalidInput(f"message ids are integers, not {shown(i)}")
        with translated("retrying failed deferred messages"), self._connection() as conn:
            row = conn.execute(RETRY_DEFERRED, (ids,)).fetchone()
        assert row is not None
        return int(row["retried"])

    def retry_failed_http_push(
        self,
        client_id: str | None = None,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        since: timedelta | None = None,
        delivery_ids: Iterable[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Re-send failed HTTP pushes (one client's, or all) now; returns the outcome of each
        (delivery_id, message_id, client_id, status, push_status_code, last_error).

        Deliveries retried ``max_retries`` times already are left alone. ``since`` keeps to
        deliveries created within that long before the database's clock; ``delivery_ids``
        re-sends those (if failed http deliveries), whatever their retry count. A delivery
        another session holds at that moment is skipped.

        One call of the database's retry_failed_http_push(): at most 50 deliveries, none
        started after 120 s; call again for the rest.
        """
        ids = None if delivery_ids is None else list(delivery_ids)
        with translated("retrying failed HTTP pushes"), self._connection() as conn:
            return conn.execute(RETRY_FAILED_HTTP_PUSH, (client_id, max_retries, since, ids)).fetchall()

    def count_failed_http_pushes(
        self,
        client_id: str | None = None,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        since: timedelta | None = None,
        delivery_ids: Iterable[int] | None = None,
    ) -> int:
        """Failed HTTP pushes :meth:`retry_failed_http_push` with these arguments would re-send
        now, all of them (one call re-sends at most 50)."""
        ids = None if delivery_ids is None else list(delivery_ids)
        params = {"client": client_id, "since": since, "ids": ids, "max": max_retries}
        with translated("counting failed HTTP pushes"), self._connection() as conn:
            row = conn.execute(COUNT_FAILED_HTTP_PUSHES, params).fetchone()
        assert row is not None
        return int(row["n"])

    def database_time_ago(self, interval: timedelta) -> datetime:
        """The database's clock ``interval`` ago (not this host's)."""
        with translated("reading the database's clock"), self._connection() as conn:
            row = conn.execute(TIME_AGO, (interval,)).fetchone()
        assert row is not None
        return row["at"]

    def count_archivable(self, older_than: timedelta) -> int:
        """Messages :meth:`archive_messages` (or :meth:`expire_messages`) would take now: created
        longer ago than ``older_than``, none of their deliveries pending or processing."""
        with translated("counting messages to archive"), self._connection() as conn:
            row = conn.execute(COUNT_ARCHIVABLE, (older_than,)).fetchone()
        assert row is not None
        return int(row["n"])

    def count_purgeable(self, older_than: timedelta) -> int:
        """Deliveries :meth:`purge_deliveries` would delete now: delivered or notified ones
        finished longer ago than ``older_than``."""
        with translated("counting deliveries to purge"), self._connection() as conn:
            row = conn.execute(COUNT_PURGEABLE, (older_than,)).fetchone()
        assert row is not None
        return int(row["n"])

    def archive_messages(self, older_than: timedelta, batch: int) -> int:
        """Move up to ``batch`` finished messages older than ``older_than``, with their deliveries
        and attempts, to the history tables (one transaction); how many moved."""
        return self._housekeeping(ARCHIVE_MESSAGES, "archive", older_than, batch)

    def expire_messages(self, older_than: timedelta, batch: int) -> int:
        """As :meth:`archive_messages`, but delete them, keeping no history."""
        return self._housekeeping(EXPIRE_MESSAGES, "expire", older_than, batch)

    def purge_deliveries(self, older_than: timedelta, batch: int) -> int:
        """Delete up to ``batch`` delivered or notified deliveries (and their attempts) finished
        longer ago than ``older_than`` (one transaction); how many."""
        return self._housekeeping(PURGE_DELIVERIES, "purge", older_than, batch)

    def _housekeeping(self, statement: str, task: str, older_than: timedelta, batch: int) -> int:
        with translated(f"running pgmsg_{task}"), self._connection() as conn:
            row = conn.execute(statement, (older_than, batch)).fetchone()
        return int(row["n"]) if row else 0
