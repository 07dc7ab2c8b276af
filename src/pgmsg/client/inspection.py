"""Reading what happened: messages, deliveries, attempts, stats, dead letters, deferred
messages, applied migrations."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from pgmsg.client.codec import _check_int
from pgmsg.client.connection import ClientCore
from pgmsg.errors import InvalidInput, NotFound, translated

MESSAGE = "SELECT * FROM messages WHERE id = %s"

DELIVERY = "SELECT * FROM message_delivery WHERE id = %s"

DELIVERIES_OF_MESSAGE = "SELECT * FROM message_delivery WHERE message_id = %s ORDER BY id"

#: The newest deliveries matching every filter given (NULL: no filter).
FIND_DELIVERIES = """
            SELECT * FROM message_delivery
             WHERE (%(client)s::text IS NULL OR client_id = %(client)s)
               AND (%(status)s::text IS NULL OR status = %(status)s)
               AND (%(mode)s::text IS NULL OR delivery_mode = %(mode)s)
               AND (%(message)s::bigint IS NULL OR message_id = %(message)s)
               AND (%(since)s::interval IS NULL OR created_at >= now() - %(since)s::interval)
             ORDER BY id DESC
             LIMIT %(limit)s
            """

ATTEMPTS = "SELECT * FROM delivery_attempts WHERE delivery_id = %s ORDER BY attempt"

#: Counts by mode and status for given messages; a publisher sees only its own messages'.
MESSAGE_DELIVERY_STATS = "SELECT * FROM pgmsg_delivery_stats(%s)"

#: Per client and mode: counts per status and the delay (delivered_at - created_at)
#: percentiles, over every delivery (or one client's, or those created within an interval).
CLIENT_DELIVERY_STATS = """
            SELECT client_id, delivery_mode,
                   count(*) FILTER (WHERE status = 'pending')    AS pending,
                   count(*) FILTER (WHERE status = 'processing') AS processing,
                   count(*) FILTER (WHERE status = 'delivered')  AS delivered,
                   count(*) FILTER (WHERE status = 'failed')     AS failed,
                   count(*) FILTER (WHERE status = 'notified')   AS notified,
                   count(*) FILTER (WHERE status = 'dead')       AS dead,
                   count(*) FILTER (WHERE status = 'cancelled')  AS cancelled,
                   count(*) AS total,
                   -- undelivered rows have a NULL delay, which the aggregates skip
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY delay)  AS p50_seconds,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY delay) AS p95_seconds,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY delay) AS p99_seconds
              FROM (SELECT client_id, delivery_mode, status,
                           extract(epoch FROM delivered_at - created_at)::float8 AS delay
                      FROM message_delivery
                     WHERE (%(client)s::text IS NULL OR client_id = %(client)s)
                       AND (%(since)s::interval IS NULL OR created_at >= now() - %(since)s::interval)) d
             GROUP BY client_id, delivery_mode
             ORDER BY client_id, delivery_mode
            """

DEAD_LETTERS = (
    "SELECT * FROM message_delivery WHERE status = 'dead' "
    "AND (%(c)s::text IS NULL OR client_id = %(c)s) ORDER BY id"
)

#: Dead letters of one client (or all), among the given ids (or all).
COUNT_DEAD_LETTERS = (
    "SELECT count(*) AS n FROM message_delivery WHERE status = 'dead' "
    "AND (%(c)s::text IS NULL OR client_id = %(c)s) "
    "AND (%(ids)s::bigint[] IS NULL OR id = ANY (%(ids)s))"
)

DEFERRED_STATUS = "SELECT * FROM pgmsg_deferred_status()"

DEFERRED_FAILURES = (
    "SELECT id, message_type, namespace, created_at, failed_at, error FROM message_inbox "
    "WHERE error IS NOT NULL ORDER BY id LIMIT %s"
)

#: Whether the migrations' tracking table exists (not before the first `pgmsg migrate`).
MIGRATIONS_TRACKED = "SELECT to_regclass('pgmsg_migrations') IS NOT NULL AS yes"

APPLIED_MIGRATIONS = "SELECT version, name, checksum, applied_at FROM pgmsg_migrations ORDER BY version"


class InspectionMixin(ClientCore):
    """Read messages, deliveries and their history, as far as this role may."""

    def message(self, message_id: int) -> dict[str, Any]:
        """One message by id, as far as row-level security lets this connection's role read it."""
        with translated(f"reading message {message_id}"), self._connection() as conn:
            row = conn.execute(MESSAGE, (message_id,)).fetchone()
        if row is None:
            raise NotFound(f"no message with id {message_id}")
        return row

    def delivery(self, delivery_id: int) -> dict[str, Any]:
        """One row of ``message_delivery``; NotFound when there is none with that id."""
        with translated(f"reading delivery {delivery_id}"), self._connection() as conn:
            row = conn.execute(DELIVERY, (delivery_id,)).fetchone()
        if row is None:
            raise NotFound(f"no delivery with id {delivery_id}")
        return row

    def deliveries(self, message_id: int) -> list[dict[str, Any]]:
        """The deliveries of one message, one dict per row of ``message_delivery``."""
        with translated(f"reading the deliveries of message {message_id}"), self._connection() as conn:
            return conn.execute(DELIVERIES_OF_MESSAGE, (message_id,)).fetchall()

    def find_deliveries(
        self,
        *,
        client_id: str | None = None,
        status: str | None = None,
        mode: str | None = None,
        message_id: int | None = None,
        since: timedelta | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` deliveries matching every filter given (``since``: created
        within that long before the database's clock), newest first."""
        with translated("listing deliveries"), self._connection() as conn:
            return conn.execute(
                FIND_DELIVERIES,
                {
                    "client": client_id,
                    "status": status,
                    "mode": mode,
                    "message": message_id,
                    "since": since,
                    "limit": limit,
                },
            ).fetchall()

    def attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        """The HTTP attempts logged for one delivery, oldest first."""
        with translated(f"reading the attempts of delivery {delivery_id}"), self._connection() as conn:
            return conn.execute(ATTEMPTS, (delivery_id,)).fetchall()

    def delivery_stats(
        self,
        message_ids: Iterable[int] | None = None,
        *,
        client_id: str | None = None,
        since: timedelta | None = None,
    ) -> list[dict[str, Any]]:
        """Delivery counts, for given messages or per client.

        With ``message_ids``: counts by mode and status for those messages (a publisher
        may call it, and sees its own messages' only): rows of ``delivery_mode``,
        ``status``, ``count``.

        Without: one row per client and mode, of every delivery (or ``client_id``'s, or
        those created within ``since``), with a count per status, ``total``, and the
        delivery delay (delivered_at - created_at) percentiles ``p50_seconds``,
        ``p95_seconds``, ``p99_seconds`` over the delivered ones.
        """
        if message_ids is not None:
            if client_id is not None or since is not None:
                raise InvalidInput("delivery stats are for given messages or by client and age, not both")
            with translated("reading delivery stats"), self._connection() as conn:
                return conn.execute(MESSAGE_DELIVERY_STATS, (list(message_ids),)).fetchall()
        with translated("summarising deliveries"), self._connection() as conn:
            return conn.execute(CLIENT_DELIVERY_STATS, {"client": client_id, "since": since}).fetchall()

    def dead_letters(self, client_id: str | None = None) -> list[dict[str, Any]]:
        """Dead deliveries, oldest first, with their last error."""
        with translated("listing dead letters"), self._connection() as conn:
            return conn.execute(DEAD_LETTERS, {"c": client_id}).fetchall()

    def count_dead_letters(
        self, client_id: str | None = None, delivery_ids: Iterable[int] | None = None
    ) -> int:
        """How many dead letters :meth:`redrive` with the same arguments would send round again."""
        ids = None if delivery_ids is None else list(delivery_ids)
        with translated("counting dead letters"), self._connection() as conn:
            row = conn.execute(COUNT_DEAD_LETTERS, {"c": client_id, "ids": ids}).fetchone()
        assert row is not None
        return int(row["n"])

    def deferred_status(self) -> dict[str, Any]:
        """How many deferred messages wait, how many failed, and when the oldest waiting was published."""
        with translated("reading the deferred messages"), self._connection() as conn:
            row = conn.execute(DEFERRED_STATUS).fetchone()
        assert row is not None
        return dict(row)

    def deferred_failures(self, limit: int = 100) -> list[dict[str, Any]]:
        """Deferred messages the worker could not move, oldest first, with the error."""
        _check_int("limit", limit)
        with translated("listing failed deferred messages"), self._connection() as conn:
            return conn.execute(DEFERRED_FAILURES, (limit,)).fetchall()

    def applied_migrations(self) -> list[dict[str, Any]]:
        """The migrations recorded in pgmsg_migrations (version, name, checksum, applied_at),
        in version order; none before the first migration."""
        with translated("reading the applied migrations"), self._connection() as conn:
            tracked = conn.execute(MIGRATIONS_TRACKED).fetchone()
            if not (tracked and tracked["yes"]):
                return []
            return conn.execute(APPLIED_MIGRATIONS).fetchall()
