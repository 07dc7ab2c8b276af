"""The pgmsg client: publish, subscribe, consume and listen.

Every statement goes through parameters; nothing the caller passes is spliced
into SQL text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from pgmsg.config import conninfo_from_env
from pgmsg.errors import InvalidInput, NotFound, translated

DELIVERY_MODES = ("async", "http", "notify")


@dataclass(frozen=True)
class Subscription:
    """A row of ``subscriptions``."""

    id: int
    client_id: str
    delivery_mode: str
    message_type: str
    namespace: str
    webhook_url: str | None
    notify_channel: str | None
    http_timeout_ms: int
    active: bool


@dataclass(frozen=True)
class Delivery:
    """An async delivery handed to a consumer, with its message."""

    id: int
    message_id: int
    client_id: str
    message_type: str
    namespace: str
    payload: Any
    created_at: datetime
    retry_count: int


@dataclass(frozen=True)
class Notification:
    """A NOTIFY received by :meth:`Client.listen`; ``payload`` is the decoded JSON envelope."""

    channel: str
    payload: dict[str, Any]
    pid: int


@dataclass(frozen=True)
class ConsumeResult:
    """What one :meth:`Client.consume` call did."""

    delivered: list[int]
    failed: list[int]


def parse_payload(text: str) -> Any:
    """Decode a JSON payload given as text, or raise InvalidInput saying where it is broken."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"payload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def _jsonb(payload: Any) -> Jsonb:
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"payload cannot be encoded as JSON: {exc}") from exc
    return Jsonb(payload)


class Client:
    """A pool of connections to the messaging database.

    ``conninfo`` is a libpq connection string or URI; by default it comes from
    PGMSG_DSN or the PG* variables (see :mod:`pgmsg.config`).
    """

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 10.0,
    ) -> None:
        self.conninfo = conninfo_from_env() if conninfo is None else conninfo
        self._pool = ConnectionPool(
            self.conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=connect_timeout,
            # A connection that died while idle (server restart) is replaced
            # before it is handed out, not discovered by the caller's query.
            check=ConnectionPool.check_connection,
            kwargs={"row_factory": dict_row, "autocommit": True},
            name="pgmsg",
        )
        with translated("connecting to the messaging database"):
            self._pool.open(wait=True, timeout=connect_timeout)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- publishing -----------------------------------------------------------

    def publish(self, message_type: str, payload: Any = None, namespace: str = "default") -> int:
        """Insert one message (which fans it out) and return its id."""
        body = _jsonb({} if payload is None else payload)
        with translated(f"publishing a {message_type!r} message"), self._pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO messages (message_type, namespace, payload) VALUES (%s, %s, %s) RETURNING id",
                (message_type, namespace, body),
            ).fetchone()
        assert row is not None
        return int(row["id"])

    def publish_many(self, messages: Iterable[tuple[str, Any, str]]) -> list[int]:
        """Insert (message_type, payload, namespace) tuples in one transaction; all or none."""
        rows = [(t, _jsonb({} if p is None else p), ns) for t, p, ns in messages]
        if not rows:
            return []
        with translated(f"publishing {len(rows)} messages"), self._pool.connection() as conn:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO messages (message_type, namespace, payload) "
                    "SELECT t, ns, p FROM unnest(%s::text[], %s::text[], %s::jsonb[]) AS u(t, ns, p) "
                    "RETURNING id",
                    ([r[0] for r in rows], [r[2] for r in rows], [r[1] for r in rows]),
                )
                return [int(r["id"]) for r in cur.fetchall()]

    # -- subscriptions --------------------------------------------------------

    def subscribe(
        self,
        client_id: str,
        delivery_mode: str,
        *,
        message_type: str = "*",
        namespace: str = "*",
        webhook_url: str | None = None,
        notify_channel: str | None = None,
        http_timeout_ms: int = 5000,
    ) -> Subscription:
        """Create (or re-activate and update) a subscription and return it."""
        with translated(f"subscribing {client_id!r}"), self._pool.connection() as conn:
            row = conn.execute(
                """
                INSERT INTO subscriptions (client_id, delivery_mode, message_type, namespace,
                                           webhook_url, notify_channel, http_timeout_ms)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (client_id, delivery_mode, message_type, namespace) DO UPDATE
                   SET webhook_url = EXCLUDED.webhook_url,
                       notify_channel = EXCLUDED.notify_channel,
                       http_timeout_ms = EXCLUDED.http_timeout_ms,
                       active = true
                RETURNING id, client_id, delivery_mode, message_type, namespace, webhook_url,
                          notify_channel, http_timeout_ms, active
                """,
                (client_id, delivery_mode, message_type, namespace, webhook_url, notify_channel,
                 http_timeout_ms),
            ).fetchone()
        assert row is not None
        return Subscription(**row)

    def subscriptions(self, client_id: str | None = None) -> list[Subscription]:
        """All subscriptions, or one client's."""
        with translated("listing subscriptions"), self._pool.connection() as conn:
            rows = conn.execute(
                """
                SELECT id, client_id, delivery_mode, message_type, namespace, webhook_url,
                       notify_channel, http_timeout_ms, active
                  FROM subscriptions WHERE %(client)s::text IS NULL OR client_id = %(client)s
                 ORDER BY client_id, id
                """,
                {"client": client_id},
            ).fetchall()
        return [Subscription(**r) for r in rows]

    def remove_subscriptions(self, client_id: str) -> int:
        """Delete a client's subscriptions (its deliveries stay for the audit trail)."""
        with translated(f"removing the subscriptions of {client_id!r}"), self._pool.connection() as conn:
            cur = conn.execute("DELETE FROM subscriptions WHERE client_id = %s", (client_id,))
        if cur.rowcount == 0:
            raise NotFound(f"no subscription for client {client_id!r}")
        return cur.rowcount

    # -- async consumption ----------------------------------------------------

    def consume(
        self,
        client_id: str,
        handler: Callable[[Delivery], object],
        *,
        batch_size: int = 10,
    ) -> ConsumeResult:
        """Claim up to ``batch_size`` pending async deliveries and hand each to ``handler``.

        The claim (``FOR UPDATE SKIP LOCKED``) and the outcome commit together:
        concurrent consumers never get the same delivery, and a consumer that
        dies mid-batch leaves its deliveries pending for the next one. A
        delivery whose handler raises stays pending with the error and one more
        retry counted.
        """
        if batch_size < 1:
            raise InvalidInput("batch_size must be at least 1")
        delivered: list[int] = []
        failed: list[int] = []
        with translated(f"consuming deliveries of {client_id!r}"), self._pool.connection() as conn:
            with conn.transaction():
                rows = conn.execute(
                    """
                    SELECT d.id, d.message_id, d.client_id, d.retry_count,
                           m.message_type, m.namespace, m.payload, m.created_at
                      FROM message_delivery d
                      JOIN messages m ON m.id = d.message_id
                     WHERE d.client_id = %s AND d.delivery_mode = 'async' AND d.status = 'pending'
                     ORDER BY d.id
                     LIMIT %s
                       FOR UPDATE OF d SKIP LOCKED
                    """,
                    (client_id, batch_size),
                ).fetchall()
                for row in rows:
                    delivery = Delivery(**row)
                    try:
                        handler(delivery)
                    except Exception as exc:  # the handler's failure is data, recorded below
                        failed.append(delivery.id)
                        conn.execute(
                            "UPDATE message_delivery SET retry_count = retry_count + 1, last_error = %s, "
                            "updated_at = now() WHERE id = %s",
                            (f"{type(exc).__name__}: {exc}"[:2000], delivery.id),
                        )
                    else:
                        delivered.append(delivery.id)
                if delivered:
                    conn.execute(
                        "UPDATE message_delivery SET status = 'delivered', delivered_at = clock_timestamp(), "
                        "claimed_at = coalesce(claimed_at, now()), updated_at = now(), last_error = NULL "
                        "WHERE id = ANY(%s)",
                        (delivered,),
                    )
        return ConsumeResult(delivered=delivered, failed=failed)

    # -- NOTIFY ---------------------------------------------------------------

    def listener(self, *channels: str) -> Listener:
        """A :class:`Listener` on ``channels``; LISTEN is issued when it is entered."""
        return Listener(self.conninfo, channels)

    def listen(
        self, channel: str, *, timeout: float | None = None, max_notifications: int | None = None
    ) -> Iterator[Notification]:
        """Yield notifications on ``channel`` until ``timeout`` seconds pass or enough arrived."""
        with self.listener(channel) as listener:
            yield from listener.notifications(timeout=timeout, limit=max_notifications)

    # -- inspection and retries -----------------------------------------------

    def deliveries(self, message_id: int) -> list[dict[str, Any]]:
        """The deliveries of one message, one dict per row of ``message_delivery``."""
        with translated(f"reading the deliveries of message {message_id}"), self._pool.connection() as conn:
            return conn.execute(
                "SELECT * FROM message_delivery WHERE message_id = %s ORDER BY id", (message_id,)
            ).fetchall()

    def attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        """The HTTP attempts logged for one delivery, oldest first."""
        with translated(f"reading the attempts of delivery {delivery_id}"), self._pool.connection() as conn:
            return conn.execute(
                "SELECT * FROM delivery_attempts WHERE delivery_id = %s ORDER BY attempt", (delivery_id,)
            ).fetchall()

    def retry_failed_http_push(self, client_id: str | None = None) -> list[dict[str, Any]]:
        """Re-send failed HTTP pushes (one client's, or all); returns the outcome of each."""
        with translated("retrying failed HTTP pushes"), self._pool.connection() as conn:
            return conn.execute("SELECT * FROM retry_failed_http_push(%s)", (client_id,)).fetchall()


class Listener:
    """A dedicated connection that LISTENs on channels (LISTEN is per session).

    Use it as a context manager: notifications committed after ``__enter__``
    returns are received.
    """

    def __init__(self, conninfo: str, channels: Iterable[str]) -> None:
        self.conninfo = conninfo
        self.channels = tuple(channels)
        if not self.channels:
            raise InvalidInput("listen to at least one channel")
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> Listener:
        with translated(f"listening on {', '.join(self.channels)}"):
            self._conn = psycopg.connect(self.conninfo, autocommit=True)
            for channel in self.channels:
                self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def notifications(
        self, *, timeout: float | None = None, limit: int | None = None
    ) -> Iterator[Notification]:
        """Yield notifications until ``timeout`` seconds have passed or ``limit`` arrived."""
        if self._conn is None:
            raise RuntimeError("use the Listener as a context manager before reading notifications")
        deadline = None if timeout is None else time.monotonic() + timeout
        received = 0
        while limit is None or received < limit:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            with translated(f"listening on {', '.join(self.channels)}"):
                batch = list(self._conn.notifies(timeout=remaining, stop_after=1))
            for notify in batch:
                received += 1
                yield Notification(channel=notify.channel, payload=json.loads(notify.payload),
                                   pid=notify.pid)

    def next(self, timeout: float) -> Notification | None:
        """The next notification, or None when none arrives within ``timeout`` seconds."""
        return next(iter(self.notifications(timeout=timeout, limit=1)), None)
