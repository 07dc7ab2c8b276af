"""Publishing: one message, a batch, and deferred fan-out (publish now, fan out moments later)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg.rows import tuple_row

from pgmsg.client.codec import _check_int, _payload_text
from pgmsg.client.connection import ClientCore
from pgmsg.client.models import MAX_KEY_LENGTH
from pgmsg.errors import InvalidInput, shown, translated

#: A publish writes the message to messages (fanned out in the same transaction) or,
#: deferred, to message_inbox (fanned out by pgmsg_fan_out_deferred after the commit).
PUBLISH = (
    "INSERT INTO messages (message_type, namespace, payload, message_key) "
    "VALUES (%s, %s, %s::jsonb, %s) RETURNING id"
)
PUBLISH_DEFERRED = PUBLISH.replace("INTO messages ", "INTO message_inbox ", 1)

#: A batch as one JSON array [[type, payload, namespace], ...], inserted in one statement;
#: ids in the order given.
_PUBLISH_BATCH = (
    "INSERT INTO {table} (message_type, namespace, payload) "
    "SELECT e->>0, e->>2, e->1 FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS b(e, n) "
    "ORDER BY n RETURNING id"
)
PUBLISH_BATCH = _PUBLISH_BATCH.format(table="messages")
PUBLISH_BATCH_DEFERRED = _PUBLISH_BATCH.format(table="message_inbox")

#: Move up to a number of deferred messages into messages (which fans them out).
FAN_OUT_DEFERRED = "SELECT pgmsg_fan_out_deferred(%s) AS moved"


class PublishMixin(ClientCore):
    """Insert messages; the database fans them out to every matching subscription."""

    def publish(
        self,
        message_type: str,
        payload: Any = None,
        namespace: str = "default",
        *,
        key: str | None = None,
        deferred: bool = False,
    ) -> int:
        """Insert one message (which fans it out) and return its id.

        ``key`` is the ordering key: ordered subscriptions get messages with the
        same key one at a time, in publish order. ``deferred`` writes it to
        message_inbox instead: the commit no longer waits for the deliveries,
        which the fan-out worker creates moments later (same id, same checks).
        """
        # Encoded once here (which also validates it), cast by the server.
        body = _payload_text({} if payload is None else payload)
        if key is not None and not (isinstance(key, str) and 1 <= len(key) <= MAX_KEY_LENGTH):
            raise InvalidInput(
                f"invalid message key {shown(key)}: give 1-{MAX_KEY_LENGTH} characters, or no key"
            )
        with translated(f"publishing a {shown(message_type)} message"), self._connection() as conn:
            # A tuple row: the dict row's names are built for every statement.
            row = (
                conn.cursor(row_factory=tuple_row)
                .execute(
                    PUBLISH_DEFERRED if deferred else PUBLISH,
                    (message_type, namespace, body, key),
                )
                .fetchone()
            )
        assert row is not None
        return int(row[0])

    def publish_many(self, messages: Iterable[tuple[str, Any, str]], *, deferred: bool = False) -> list[int]:
        """Insert (message_type, payload, namespace) tuples in one transaction; all or none.

        The batch travels as one JSON array, [[type, payload, namespace], ...]:
        a text array of JSON documents would need every quote escaped, which
        cost more than the insert itself. Ids come back in the order given.
        ``deferred`` as for publish.
        """
        rows = []
        for message in messages:
            if not isinstance(message, tuple | list) or len(message) != 3:
                raise InvalidInput(
                    "each message must be a (message_type, payload, namespace) tuple, not "
                    + (
                        f"{len(message)} values"
                        if isinstance(message, tuple | list)
                        else f"{type(message).__name__}"
                    )
                )
            t, p, ns = message
            rows.append([t, {} if p is None else p, ns])
        if not rows:
            return []
        for row in rows:  # None is left for the database to refuse with its own message
            if not isinstance(row[0], (str, type(None))) or not isinstance(row[2], (str, type(None))):
                raise InvalidInput(
                    f"message_type and namespace must be text, not {shown(row[0])} and {shown(row[2])}"
                )
        batch = _payload_text(rows)
        # One statement, so all or none without a BEGIN and a COMMIT of its own (two round
        # trips); ids as tuples, since a dict per row cost more than the JSON encoding.
        with (
            translated(f"publishing {len(rows)} messages"),
            self._connection() as conn,
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            cur.execute(PUBLISH_BATCH_DEFERRED if deferred else PUBLISH_BATCH, (batch,))
            return [r[0] for r in cur.fetchall()]

    def fan_out_deferred(self, limit: int = 1000) -> int:
        """Move up to ``limit`` deferred messages into messages (fanning them out); how many moved.

        0 when none waits, or when another worker is moving them at that moment.
        """
        _check_int("limit", limit)
        with translated("fanning out deferred messages"), self._connection() as conn:
            row = conn.execute(FAN_OUT_DEFERRED, (limit,)).fetchone()
        assert row is not None
        return int(row["moved"])
