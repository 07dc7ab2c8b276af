"""NOTIFY: the Listener (a dedicated connection that LISTENs) and the client's ways to get one."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from psycopg import sql

from pgmsg.client.codec import configure, decode_json
from pgmsg.client.connection import (
    DEFAULT_CONNECT_TIMEOUT,
    RECONNECT_PAUSE_SECONDS,
    ClientCore,
    with_connect_timeout,
)
from pgmsg.client.models import Notification
from pgmsg.errors import ConnectionFailed, InvalidInput, translated

log = logging.getLogger("pgmsg.client")


class ListenMixin(ClientCore):
    """LISTEN on channels through a Listener of this client's connection settings."""

    def listener(self, *channels: str) -> Listener:
        """A :class:`Listener` on ``channels``; LISTEN is issued when it is entered."""
        return Listener(self.conninfo, channels)

    def listen(
        self, channel: str, *, timeout: float | None = None, max_notifications: int | None = None
    ) -> Iterator[Notification]:
        """Yield notifications on ``channel`` until ``timeout`` seconds pass or enough arrived."""
        with self.listener(channel) as listener:
            yield from listener.notifications(timeout=timeout, limit=max_notifications)


#: LISTEN on one channel (its name quoted as an identifier).
LISTEN = sql.SQL("LISTEN {}")

#: The envelopes of the deliveries a listener was notified of, as row-level security
#: lets its role read them; pgmsg_envelope is the one definition of the envelope.
READ_REFERENCES = (
    "SELECT d.id, pgmsg_envelope(m) FROM message_delivery d "
    "JOIN messages m ON m.id = d.message_id WHERE d.id = ANY (%s::bigint[])"
)


def _is_reference(payload: Any) -> bool:
    """A pgmsg notification without its message: the default, or an opt-in one whose
    payload was too large for NOTIFY ("payload_omitted")."""
    return (
        isinstance(payload, dict)
        and "payload" not in payload
        and type(payload.get("delivery_id")) is int
        and type(payload.get("id")) is int
    )


#: Ids are bigints: a forged reference naming a larger number would make the read fail.
_BIGINT = range(-(2**63), 2**63)
#: What _notification_json returns for a payload that is not JSON.
_NOT_JSON = object()


def _notification_json(channel: str, text: str) -> Any:
    """The decoded payload, or _NOT_JSON (logged) for text no pgmsg trigger sends: any role
    may NOTIFY on any channel, and a forged notification must not stop a listener."""
    try:
        return decode_json(text)
    except ValueError:
        log.warning("dropped a notification on %s that is not JSON: %.80r", channel, text)
        return _NOT_JSON


class Listener:
    """A dedicated connection that LISTENs on channels (LISTEN is per session).

    Use it as a context manager: notifications committed after ``__enter__``
    returns are received.

    When its connection is lost (the database restarted), :meth:`notifications`
    connects and LISTENs again by itself, every RECONNECT_PAUSE_SECONDS until it
    succeeds or its timeout passes; ``reconnects`` counts how often it did.
    Notifications sent while it was disconnected are lost (PostgreSQL queues them
    only for sessions listening at the time): a durable subscriber catches up with
    :meth:`Client.claim` when ``reconnects`` moves.

    A notification of a pgmsg subscription is, unless the subscription opted in
    with ``notify_payload``, a reference: ``{"id": <message id>, "delivery_id": ...}``
    (every role that can connect may LISTEN on any channel, so the message stays
    behind row-level security). The listener reads the envelopes of the references
    it received as its own role, one query per batch, and yields the envelope plus
    ``delivery_id``, as if it had been sent. A reference its role may not read
    (another client's delivery, or one forged with NOTIFY) is dropped with a warning.
    """

    def __init__(self, conninfo: str, channels: Iterable[str]) -> None:
        self.conninfo = with_connect_timeout(conninfo, DEFAULT_CONNECT_TIMEOUT)
        self.channels = tuple(channels)
        if not self.channels:
            raise InvalidInput("listen to at least one channel")
        self._conn: psycopg.Connection[Any] | None = None
        # Received but not yet yielded: psycopg may hand over several notifications at
        # once, and a caller that takes one (next()) must find the others next time.
        self._pending: deque[Notification] = deque()
        self.reconnects = 0

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.conninfo, autocommit=True)
        configure(conn)
        try:
            for channel in self.channels:
                conn.execute(LISTEN.format(sql.Identifier(channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    def __enter__(self) -> Listener:
        with translated(f"listening on {', '.join(self.channels)}"):
            self._conn = self._connect()
        return self

    def _reconnect(self, deadline: float | None) -> bool:
        """Replace the lost connection, trying until ``deadline`` (time.monotonic(); None:
        no limit). True once listening again."""
        assert self._conn is not None
        self._conn.close()
        while True:
            try:
                self._conn = self._connect()
            except psycopg.OperationalError as exc:
                pause = RECONNECT_PAUSE_SECONDS
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                if pause <= 0:
                    return False
                log.debug("listener on %s cannot reconnect yet (%s)", ", ".join(self.channels), exc)
                time.sleep(pause)
            else:
                self.reconnects += 1
                log.warning(
                    "listener on %s reconnected after losing its connection", ", ".join(self.channels)
                )
                return True

    def __exit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def notifications(
        self, *, timeout: float | None = None, limit: int | None = None, raw: bool = False
    ) -> Iterator[Notification]:
        """Yield notifications until ``timeout`` seconds have passed or ``limit`` arrived.

        ``raw`` keeps the payload as the text sent instead of decoding JSON (and
        references are not read).
        """
        if self._conn is None:
            raise RuntimeError("use the Listener as a context manager before reading notifications")
        deadline = None if timeout is None else time.monotonic() + timeout
        received = 0
        while limit is None or received < limit:
            if self._pending:
                received += 1
                yield self._pending.popleft()
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            try:
                with translated(f"listening on {', '.join(self.channels)}"):
                    if self._conn.closed:  # lost before: listen again on a new connection
                        if not self._reconnect(deadline):
                            return  # still unreachable when the time was up; the next call tries again
                        continue
                    batch = list(self._conn.notifies(timeout=remaining, stop_after=1))
                    notes = [
                        Notification(
                            channel=notify.channel, payload=notify.payload if raw else payload, pid=notify.pid
                        )
                        for notify in batch
                        if raw
                        or (payload := _notification_json(notify.channel, notify.payload)) is not _NOT_JSON
                    ]
                    self._pending.extend(notes if raw else self._read_references(notes))
            except ConnectionFailed:
                self._conn.close()  # lost: reconnected at the top of the loop
                continue

    def _read_references(self, notes: list[Notification]) -> list[Notification]:
        """``notes`` with each reference replaced by the envelope its delivery names, read
        through row-level security as this connection's role; unreadable ones dropped."""
        wanted = {
            n.payload["delivery_id"]
            for n in notes
            if _is_reference(n.payload) and n.payload["delivery_id"] in _BIGINT
        }
        if not any(_is_reference(n.payload) for n in notes):
            return notes
        assert self._conn is not None
        # A reference that names no possible delivery is dropped below, unread.
        rows = self._conn.execute(READ_REFERENCES, (sorted(wanted),)).fetchall() if wanted else []
        envelopes: dict[int, dict[str, Any]] = {delivery_id: envelope for delivery_id, envelope in rows}
        read: list[Notification] = []
        for note in notes:
            if not _is_reference(note.payload):
                read.append(note)
                continue
            envelope = envelopes.get(note.payload["delivery_id"])
            if envelope is None or envelope["id"] != note.payload["id"]:
                # Another client's delivery (any role may LISTEN on any channel), a
                # forged NOTIFY, or a message archived since: nothing to hand over.
                log.warning(
                    "dropped a notification on %s: delivery %s of message %s is not readable as this role",
                    note.channel,
                    note.payload["delivery_id"],
                    note.payload["id"],
                )
                continue
            read.append(
                Notification(
                    channel=note.channel,
                    pid=note.pid,
                    fetched=True,
                    payload={**envelope, "delivery_id": note.payload["delivery_id"]},
                )
            )
        return read

    def next(self, timeout: float) -> Notification | None:
        """The next notification, or None when none arrives within ``timeout`` seconds."""
        return next(iter(self.notifications(timeout=timeout, limit=1)), None)
