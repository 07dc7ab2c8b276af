"""The pgmsg client: publish, subscribe, consume and listen.

Every statement goes through parameters; nothing the caller passes is spliced
into SQL text.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import ConnectionPool

from pgmsg.config import conninfo_from_env
from pgmsg.errors import ConnectionFailed, InvalidInput, LeaseLost, NotFound, shown, translated

log = logging.getLogger("pgmsg.client")

DELIVERY_MODES = ("async", "http", "notify")

#: A pooled connection idle for longer than this is checked before it is handed out.
CHECK_AFTER_IDLE_SECONDS = 1.0

#: Pause between attempts of a consumer or a Listener to reach the database again
#: after its connection was lost (the database restarted).
RECONNECT_PAUSE_SECONDS = 0.5


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
    push_mode: str = "dispatcher"
    max_attempts: int = 10
    lease_seconds: int = 30
    payload_filter: dict[str, Any] | None = None
    ordered: bool = False
    durable: bool = False
    signing_secret: str | None = None
    deactivated_reason: str | None = None
    notify_payload: bool = False


#: The columns of a Subscription but its secret: administrators and monitoring
#: may read these, the signing secrets only the dispatcher and the owning client.
_SUBSCRIPTION_SETTINGS = (
    "id, client_id, delivery_mode, message_type, namespace, webhook_url, notify_channel, "
    "http_timeout_ms, active, push_mode, max_attempts, lease_seconds, payload_filter, ordered, "
    "durable, deactivated_reason, notify_payload"
)
SUBSCRIPTION_COLUMNS = _SUBSCRIPTION_SETTINGS + ", signing_secret"


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery handed to a consumer, with its message.

    :meth:`Client.claim` fills the fields by position: its column list follows this order.
    """

    id: int
    message_id: int
    client_id: str
    message_type: str
    namespace: str
    payload: Any
    created_at: datetime
    attempts: int
    delivery_mode: str = "async"
    message_key: str | None = None
    lease_expires_at: datetime | None = None
    #: The claim's lease: :meth:`Client.ack` and :meth:`Client.nack` name it, and apply only
    #: while the delivery is still held under it.
    lease_token: uuid.UUID | None = None


#: What :meth:`Client.ack` and :meth:`Client.nack` take: a claimed :class:`Delivery`, or an
#: ``(id, lease token)`` pair (token ``None`` for a durable NOTIFY delivery a listener received).
DeliveryRef = Delivery | tuple[int, "uuid.UUID | str | None"]


class Acked(int):
    """How many deliveries :meth:`Client.ack` acknowledged, with the ids it did not (sorted):
    leases that lapsed and passed on, deliveries already completed, released or cancelled."""

    not_acked: tuple[int, ...]

    def __new__(cls, acked: int, not_acked: Iterable[int] = ()) -> Acked:
        self = super().__new__(cls, acked)
        self.not_acked = tuple(not_acked)
        return self


@dataclass(frozen=True)
class Notification:
    """A NOTIFY received by :meth:`Client.listen`; ``payload`` is the decoded JSON envelope.

    ``fetched`` is True when the notification was a reference (delivery and message id)
    and the envelope was read from the database as the listener's role.
    """

    channel: str
    payload: Any
    pid: int
    fetched: bool = False


@dataclass(frozen=True)
class ConsumeResult:
    """What one :meth:`Client.consume` call did."""

    delivered: list[int]
    failed: list[int]
    #: Handled, but not acknowledged or given back: the lease ran out and the delivery passed
    #: on (claimed again, released or cancelled). Its next holder delivers it again.
    stale: list[int] = dataclasses.field(default_factory=list)


#: The ordering key's length, as the messages_message_key_valid constraint allows.
MAX_KEY_LENGTH = 255
#: Longest message_type or namespace filter of a subscription: the longest type or namespace
#: a message can have (longer filters would also outgrow the subscriptions index).
MAX_PATTERN_LENGTH = 255

#: A publish writes the message to messages (fanned out in the same transaction) or,
#: deferred, to message_inbox (fanned out by pgmsg_fan_out_deferred after the commit).
_PUBLISH = ("INSERT INTO messages (message_type, namespace, payload, message_key) "
            "VALUES (%s, %s, %s::jsonb, %s) RETURNING id")
_PUBLISH_DEFERRED = _PUBLISH.replace("INTO messages ", "INTO message_inbox ", 1)


def _ids_and_tokens(deliveries: Iterable[DeliveryRef]) -> tuple[list[int], list[str]]:
    """Delivery ids and their lease tokens as array-literal elements ("NULL" for none)."""
    ids: list[int] = []
    tokens: list[str] = []
    for ref in deliveries:
        if isinstance(ref, Delivery):
            delivery_id, token = ref.id, ref.lease_token
        elif isinstance(ref, tuple) and len(ref) == 2:
            delivery_id, token = ref
        else:
            raise InvalidInput(f"an ack or nack names each delivery with its lease token, not {shown(ref)}: "
                               "pass the Delivery objects claim returned, or (id, lease_token) pairs "
                               "((id, None) for a durable NOTIFY delivery a listener received)")
        # Checked, not cast: a float would be rounded to another delivery's id.
        if not isinstance(delivery_id, int) or isinstance(delivery_id, bool):
            raise InvalidInput(f"delivery ids are integers, not {shown(delivery_id)}: pass Delivery.id values")
        if token is None:
            tokens.append("NULL")
        else:
            try:
                tokens.append(str(token if isinstance(token, uuid.UUID) else uuid.UUID(str(token))))
            except ValueError:
                raise InvalidInput(f"{shown(token)} is not a lease token (a UUID) of delivery {delivery_id}") from None
        ids.append(int(delivery_id))
    return ids, tokens


def _not_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is too large for a JSON number PostgreSQL and Python share")
    return value


def parse_payload(text: str) -> Any:
    """Decode a JSON payload given as text, or raise InvalidInput saying where it is broken."""
    try:
        return json.loads(text, parse_constant=_not_json_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"payload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise InvalidInput(f"payload is nested too deeply to decode (Python's limit is about "
                           f"{sys.getrecursionlimit()} levels)") from exc
    except ValueError as exc:  # NaN, 1e999, integers of more digits than Python converts
        raise InvalidInput(f"payload is not valid JSON: {exc}") from exc


#: 19 digits in a row: maybe an integer beyond 64 bits, which orjson would turn into a float.
#: Found by mapping every digit to "0" and everything else to a space, then looking for
#: the run: about a quarter of what the regex [0-9]{19} took, which cost more than
#: orjson's decoding of a typical payload (bench "3. Consume").
_DIGIT_RUN = b"0" * 19
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))


def decode_json(data: bytes | str) -> Any:
    """JSON from the database (jsonb, json, NOTIFY payloads), decoded.

    orjson is several times faster than the standard library, which matters
    when a claim of a hundred deliveries decodes a hundred payloads. Where it
    would differ, the standard library decodes as before, so the values are
    the same: orjson makes floats of integers beyond 64 bits (any text with
    19 digits in a row goes to the standard library) and refuses numbers
    beyond a double.
    """
    raw = data.encode() if isinstance(data, str) else data
    if _DIGIT_RUN not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


#: Seconds a connection attempt may take unless the conninfo or PGCONNECT_TIMEOUT says otherwise.
#: Without it libpq would wait as long as psycopg's default (130 s) on an attempt that hangs,
#: e.g. one made through HAProxy while a cluster elects a new leader.
DEFAULT_CONNECT_TIMEOUT = 10.0


def with_connect_timeout(conninfo: str, seconds: float) -> str:
    """``conninfo`` with connect_timeout set, unless it or the environment already sets one."""
    if "connect_timeout" in psycopg.conninfo.conninfo_to_dict(conninfo) or os.environ.get("PGCONNECT_TIMEOUT"):
        return conninfo
    return psycopg.conninfo.make_conninfo(conninfo, connect_timeout=str(max(2, math.ceil(seconds))))


def _configure(conn: psycopg.Connection[Any]) -> None:
    set_json_loads(decode_json, conn)


def _json_text(payload: Any, what: str = "payload") -> str:
    """The payload as JSON text, or InvalidInput when it cannot be (NaN, sets, objects...)."""
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} cannot be encoded as JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidInput(f"{what} is nested too deeply to encode as JSON (Python's limit is about "
                           f"{sys.getrecursionlimit()} levels)") from exc


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: What orjson would encode differently from the standard library goes to the standard library:
#: datetimes, dataclasses and subclasses of str, int, dict and list (through _refuse).
_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _payload_text(payload: Any) -> str:
    """A payload as JSON text, as _json_text makes it, about ten times sooner (bench "2. Batch
    publish": the standard library's encoding was a fifth of a batch publish's time).

    orjson writes NaN and infinities as null and refuses integers beyond 64 bits, keys that
    are not text, and nesting past 254 levels: output with a null in it, and whatever orjson
    refuses, is encoded again by _json_text, which refuses what it refused before. The only
    difference left: orjson also encodes enum members (as their value) and UUIDs (as text).
    """
    try:
        encoded = orjson.dumps(payload, default=_refuse, option=_ORJSON_STRICT)
    except TypeError:
        return _json_text(payload)
    if b"null" in encoded:
        return _json_text(payload)
    return encoded.decode()


def _check_text(name: str, value: object, *, optional: bool = False) -> None:
    """InvalidInput unless ``value`` is text (or None when optional)."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text, not {type(value).__name__}")


def _check_int(name: str, value: object) -> None:
    """InvalidInput unless ``value`` is an integer PostgreSQL's integer can hold (ranges: the database)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer, not {type(value).__name__}")
    if not -(2**31) <= value < 2**31:
        raise InvalidInput(f"{name} is out of range (more than a 32-bit integer holds)")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be True or False, not {type(value).__name__}")


def _jsonb(payload: Any, what: str = "payload") -> Jsonb:
    _json_text(payload, what)
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
        self.conninfo = with_connect_timeout(conninfo_from_env() if conninfo is None else conninfo,
                                             connect_timeout)
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = weakref.WeakKeyDictionary()
        self._pool = ConnectionPool(
            self.conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=connect_timeout,
            # A connection that died while idle (server restart) is replaced
            # before it is handed out, not discovered by the caller's query;
            # see _check_if_idle for why only idle ones are checked.
            check=self._check_if_idle,
            kwargs={"row_factory": dict_row, "autocommit": True},
            configure=_configure,
            name="pgmsg",
        )
        with translated("connecting to the messaging database"):
            self._pool.open(wait=True, timeout=connect_timeout)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; when it goes back, when is noted for _check_if_idle.

        (Not the pool's reset callback: with one, every return goes through a
        worker thread, which costs more than the check it would save.)"""
        with self._pool.connection() as conn:
            try:
                yield conn
            finally:
                self._returned[conn] = time.monotonic()

    def _check_if_idle(self, conn: psycopg.Connection[Any]) -> None:
        """Check (one round trip) a connection idle for more than CHECK_AFTER_IDLE_SECONDS.

        Checking every connection before every use doubled the round trips of a
        publish; a connection used a moment ago was alive then, and a server
        that restarts in between fails that one call with a clear error.
        """
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > CHECK_AFTER_IDLE_SECONDS:
            ConnectionPool.check_connection(conn)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- publishing -----------------------------------------------------------

    def publish(self, message_type: str, payload: Any = None, namespace: str = "default",
                *, key: str | None = None, deferred: bool = False) -> int:
        """Insert one message (which fans it out) and return its id.

        ``key`` is the ordering key: ordered subscriptions get messages with the
        same key one at a time, in publish order. ``deferred`` writes it to
        message_inbox instead: the commit no longer waits for the deliveries,
        which the fan-out worker creates moments later (same id, same checks).
        """
        # Encoded once here (which also validates it), cast by the server.
        body = _payload_text({} if payload is None else payload)
        if key is not None and not (isinstance(key, str) and 1 <= len(key) <= MAX_KEY_LENGTH):
            raise InvalidInput(f"invalid message key {shown(key)}: give 1-{MAX_KEY_LENGTH} characters, or no key")
        with translated(f"publishing a {shown(message_type)} message"), self._connection() as conn:
            # A tuple row: the dict row's names are built for every statement.
            row = conn.cursor(row_factory=tuple_row).execute(
                _PUBLISH_DEFERRED if deferred else _PUBLISH,
                (message_type, namespace, body, key),
            ).fetchone()
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
                raise InvalidInput("each message must be a (message_type, payload, namespace) tuple, not "
                                   + (f"{len(message)} values" if isinstance(message, tuple | list)
                                      else f"{type(message).__name__}"))
            t, p, ns = message
            rows.append([t, {} if p is None else p, ns])
        if not rows:
            return []
        for row in rows:  # None is left for the database to refuse with its own message
            if not isinstance(row[0], (str, type(None))) or not isinstance(row[2], (str, type(None))):
                raise InvalidInput(f"message_type and namespace must be text, not {shown(row[0])} "
                                   f"and {shown(row[2])}")
        batch = _payload_text(rows)
        # One statement, so all or none without a BEGIN and a COMMIT of its own (two round
        # trips); ids as tuples, since a dict per row cost more than the JSON encoding.
        with translated(f"publishing {len(rows)} messages"), self._connection() as conn:
            with conn.cursor(row_factory=tuple_row) as cur:
                cur.execute(
                    f"INSERT INTO {'message_inbox' if deferred else 'messages'} (message_type, namespace, payload) "
                    "SELECT e->>0, e->>2, e->1 FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS b(e, n) "
                    "ORDER BY n RETURNING id",
                    (batch,),
                )
                return [r[0] for r in cur.fetchall()]

    # -- deferred fan-out -------------------------------------------------------

    def fan_out_deferred(self, limit: int = 1000) -> int:
        """Move up to ``limit`` deferred messages into messages (fanning them out); how many moved.

        0 when none waits, or when another worker is moving them at that moment.
        """
        _check_int("limit", limit)
        with translated("fanning out deferred messages"), self._connection() as conn:
            row = conn.execute("SELECT pgmsg_fan_out_deferred(%s) AS moved", (limit,)).fetchone()
        assert row is not None
        return int(row["moved"])

    def deferred_status(self) -> dict[str, Any]:
        """How many deferred messages wait, how many failed, and when the oldest waiting was published."""
        with translated("reading the deferred messages"), self._connection() as conn:
            row = conn.execute("SELECT * FROM pgmsg_deferred_status()").fetchone()
        assert row is not None
        return dict(row)

    def deferred_failures(self, limit: int = 100) -> list[dict[str, Any]]:
        """Deferred messages the worker could not move, oldest first, with the error."""
        _check_int("limit", limit)
        with translated("listing failed deferred messages"), self._connection() as conn:
            return conn.execute(
                "SELECT id, message_type, namespace, created_at, failed_at, error FROM message_inbox "
                "WHERE error IS NOT NULL ORDER BY id LIMIT %s", (limit,)).fetchall()

    def retry_deferred(self, message_ids: Iterable[int] | None = None) -> int:
        """Give failed deferred messages (all, or these ids) back to the worker; how many."""
        ids = None if message_ids is None else list(message_ids)
        for i in ids or ():
            if not isinstance(i, int) or isinstance(i, bool):
                raise InvalidInput(f"message ids are integers, not {shown(i)}")
        with translated("retrying failed deferred messages"), self._connection() as conn:
            row = conn.execute("SELECT pgmsg_retry_deferred(%s::bigint[]) AS retried", (ids,)).fetchone()
        assert row is not None
        return int(row["retried"])

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
        push_mode: str = "dispatcher",
        max_attempts: int = 10,
        lease_seconds: int = 30,
        retry_base_ms: int = 1000,
        retry_max_ms: int = 3_600_000,
        payload_filter: dict[str, Any] | None = None,
        ordered: bool = False,
        durable: bool = False,
        signing_secret: str | None = None,
        notify_payload: bool = False,
    ) -> Subscription:
        """Create (or re-activate and update) a subscription and return it.

        http subscriptions get a generated Standard Webhooks secret unless
        ``signing_secret`` is given; it is in the returned Subscription.
        ``notify_payload`` (notify only) sends the message in the notification,
        where every role that can connect may LISTEN; by default a notification
        carries only ids and the listener reads the message through row-level security.
        """
        for name, value in (("client_id", client_id), ("delivery_mode", delivery_mode),
                            ("message_type", message_type), ("namespace", namespace), ("push_mode", push_mode)):
            _check_text(name, value)
        for name, value in (("webhook_url", webhook_url), ("notify_channel", notify_channel),
                            ("signing_secret", signing_secret)):
            _check_text(name, value, optional=True)
        for name, value in (("message_type", message_type), ("namespace", namespace)):
            if len(value) > MAX_PATTERN_LENGTH:
                raise InvalidInput(f"{name} filter {shown(value)} is longer than {MAX_PATTERN_LENGTH} characters; "
                                   f"no message has a longer {name}")
        for name, value in (("http_timeout_ms", http_timeout_ms), ("max_attempts", max_attempts),
                            ("lease_seconds", lease_seconds), ("retry_base_ms", retry_base_ms),
                            ("retry_max_ms", retry_max_ms)):
            _check_int(name, value)
        _check_bool("ordered", ordered)
        _check_bool("durable", durable)
        _check_bool("notify_payload", notify_payload)
        filter_value = None if payload_filter is None else _jsonb(payload_filter, "payload_filter")
        settings = {
            "client": client_id, "mode": delivery_mode, "type": message_type, "namespace": namespace,
            "url": webhook_url, "channel": notify_channel, "timeout": http_timeout_ms, "push_mode": push_mode,
            "max_attempts": max_attempts, "lease": lease_seconds, "retry_base": retry_base_ms,
            "retry_max": retry_max_ms, "filter": filter_value, "ordered": ordered, "durable": durable,
            "notify_payload": notify_payload, "secret": signing_secret,
        }
        # Administrators may not read signing secrets (only the dispatcher and the
        # owning client may), so the secret shown is the one this call generated or
        # set, never one read back: a new http subscription gets one generated here,
        # an existing one keeps its own unless signing_secret is given.
        with translated(f"subscribing {shown(client_id)}"), self._connection() as conn, conn.transaction():
            row = conn.execute(
                f"""
                WITH secret AS (
                    SELECT coalesce(%(secret)s::text,
                                    CASE WHEN %(mode)s::text = 'http' THEN pgmsg_new_signing_secret() END) AS value
                ), created AS (
                    INSERT INTO subscriptions (client_id, delivery_mode, message_type, namespace,
                                               webhook_url, notify_channel, http_timeout_ms, push_mode,
                                               max_attempts, lease_seconds, retry_base_ms, retry_max_ms,
                                               payload_filter, ordered, durable, notify_payload, signing_secret)
                    SELECT %(client)s, %(mode)s, %(type)s, %(namespace)s, %(url)s, %(channel)s, %(timeout)s,
                           %(push_mode)s, %(max_attempts)s, %(lease)s, %(retry_base)s, %(retry_max)s,
                           %(filter)s::jsonb, %(ordered)s, %(durable)s, %(notify_payload)s, secret.value
                      FROM secret
                    ON CONFLICT (client_id, delivery_mode, message_type, namespace) DO NOTHING
                    RETURNING {_SUBSCRIPTION_SETTINGS}
                )
                SELECT created.*, secret.value AS signing_secret FROM created, secret
                """,
                settings,
            ).fetchone()
            if row is None:
                # The same subscription exists: update and re-activate it. Filters are
                # matched as the insert trigger stores them (trimmed, '' is '*').
                row = conn.execute(
                    f"""
                    UPDATE subscriptions
                       SET webhook_url = %(url)s, notify_channel = %(channel)s, http_timeout_ms = %(timeout)s,
                           push_mode = %(push_mode)s, max_attempts = %(max_attempts)s, lease_seconds = %(lease)s,
                           retry_base_ms = %(retry_base)s, retry_max_ms = %(retry_max)s,
                           payload_filter = %(filter)s::jsonb, ordered = %(ordered)s, durable = %(durable)s,
                           notify_payload = %(notify_payload)s,
                           {"signing_secret = %(secret)s," if signing_secret is not None else ""}
                           active = true
                     WHERE client_id = %(client)s AND delivery_mode = %(mode)s
                       AND message_type = coalesce(NULLIF(btrim(%(type)s::text), ''), '*')
                       AND namespace = coalesce(NULLIF(btrim(%(namespace)s::text), ''), '*')
                    RETURNING {_SUBSCRIPTION_SETTINGS}, %(secret)s::text AS signing_secret
                    """,
                    settings,
                ).fetchone()
        if row is None:
            raise NotFound(f"the subscription of {client_id!r} was removed while it was being updated; subscribe again")
        return Subscription(**row)

    def subscriptions(self, client_id: str | None = None, *, with_secrets: bool = False) -> list[Subscription]:
        """All subscriptions, or one client's.

        ``with_secrets`` reads the signing secrets too, which only the superuser, the
        dispatcher and the owning client may (an administrator is refused).
        """
        columns = SUBSCRIPTION_COLUMNS if with_secrets else _SUBSCRIPTION_SETTINGS
        with translated("listing subscriptions" + (" with their secrets" if with_secrets else "")), \
                self._connection() as conn:
            rows = conn.execute(
                f"SELECT {columns} FROM subscriptions "
                "WHERE %(client)s::text IS NULL OR client_id = %(client)s ORDER BY client_id, id",
                {"client": client_id},
            ).fetchall()
        return [Subscription(**r) for r in rows]

    def rotate_secret(self, subscription_id: int, *, overlap_seconds: int = 86_400,
                      new_secret: str | None = None) -> str:
        """Give an http subscription a new signing secret; the old one stays valid for the overlap."""
        with translated(f"rotating the secret of subscription {subscription_id}"), self._connection() as conn:
            row = conn.execute(
                "SELECT pgmsg_rotate_secret(%s, make_interval(secs => %s), %s) AS secret",
                (subscription_id, overlap_seconds, new_secret),
            ).fetchone()
        assert row is not None
        return str(row["secret"])

    def remove_subscriptions(self, client_id: str) -> int:
        """Delete a client's subscriptions; their open deliveries end as cancelled, all stay for the audit trail."""
        with translated(f"removing the subscriptions of {client_id!r}"), self._connection() as conn:
            cur = conn.execute("DELETE FROM subscriptions WHERE client_id = %s", (client_id,))
        if cur.rowcount == 0:
            raise NotFound(f"no subscription for client {client_id!r}")
        return cur.rowcount

    # -- async consumption ----------------------------------------------------

    def claim(self, client_id: str, limit: int = 10, *, consumer: str | None = None,
              lease_seconds: int | None = None) -> list[Delivery]:
        """Claim up to ``limit`` due deliveries for ``lease_seconds`` (default: the subscription's).

        Until :meth:`ack` or :meth:`nack`, or until the lease expires, no one
        else can claim them; after expiry they are claimable again.

        The claim commits without waiting for the WAL flush (``p_durable =>
        false``): a claim lost in a crash just after it only means the delivery
        is delivered again, as at-least-once allows; :meth:`ack` is durable.
        """
        # In id order, i.e. publish order (UPDATE ... RETURNING has none of its own).
        # Tuples, not the pool's dicts: a claim of a hundred builds a hundred rows.
        with (translated(f"claiming deliveries of {client_id!r}"), self._connection() as conn,
              conn.cursor(row_factory=tuple_row) as cur):
            rows = cur.execute(
                "SELECT delivery_id, message_id, client_id, message_type, namespace, payload, created_at, "
                "attempts, delivery_mode, message_key, lease_expires_at, lease_token "
                "FROM pgmsg_claim(%s, %s, %s, %s, false) ORDER BY delivery_id",
                (client_id, limit, consumer, lease_seconds),
            ).fetchall()
        return [Delivery(*row) for row in rows]

    def ack(self, deliveries: Iterable[DeliveryRef]) -> Acked:
        """Mark claimed deliveries delivered, each under the lease it was claimed with.

        Takes :class:`Delivery` objects from :meth:`claim`, or ``(id, lease_token)`` pairs
        (``(id, None)`` for a durable NOTIFY delivery a listener received and nobody claimed).
        Returns how many were acknowledged (an ``int``); ``.not_acked`` lists the others: their
        lease lapsed and passed on, or they were completed, released or cancelled meanwhile.
        Those are left as they are.
        """
        ids, tokens = _ids_and_tokens(deliveries)
        if not ids:
            return Acked(0)
        # As array literals: psycopg's list dumper spends about 4 us of Python per element,
        # more than the ack's share of the server's work.
        with translated("acknowledging deliveries"), self._connection() as conn:
            row = conn.execute("SELECT acked, not_acked FROM pgmsg_ack(%s::bigint[], %s::uuid[])",
                               ("{" + ",".join(map(str, ids)) + "}",
                                "{" + ",".join(tokens) + "}")).fetchone()
        assert row is not None
        return Acked(row["acked"], row["not_acked"])

    def nack(self, delivery: DeliveryRef, *, delay_seconds: float = 0.0, error: str | None = None) -> str:
        """Give a claimed delivery back, claimable again after ``delay_seconds``.

        Returns the new status: ``pending``, or ``dead`` once the subscription's
        max_attempts are used up. Raises :class:`~pgmsg.LeaseLost` (nothing changed) when
        the delivery is no longer held under its lease.
        """
        [delivery_id], [token] = _ids_and_tokens([delivery])
        if token == "NULL":
            raise InvalidInput(f"a nack of delivery {delivery_id} needs the lease token its claim returned")
        with translated(f"rejecting delivery {delivery_id}"), self._connection() as conn:
            row = conn.execute("SELECT pgmsg_nack(%s, %s::uuid, %s, %s) AS status",
                               (delivery_id, token, delay_seconds, error)).fetchone()
        assert row is not None
        return str(row["status"])

    def consume(
        self,
        client_id: str,
        handler: Callable[[Delivery], object],
        *,
        batch_size: int = 10,
        consumer: str | None = None,
        retry_delay: Callable[[Delivery], float] | None = None,
    ) -> ConsumeResult:
        """Claim a batch, hand each delivery to ``handler``, ack or nack it.

        A delivery whose handler raises is nacked with the error, to be retried
        after ``retry_delay(delivery)`` seconds (default: 2 ** attempts, at most
        300), or becomes a dead letter when its attempts are used up.
        """
        if batch_size < 1:
            raise InvalidInput("batch_size must be at least 1")
        handled: list[Delivery] = []
        failed: list[int] = []
        stale: list[int] = []
        for delivery in self.claim(client_id, batch_size, consumer=consumer):
            try:
                handler(delivery)
            except Exception as exc:  # the handler's failure is data: recorded on the delivery
                delay = retry_delay(delivery) if retry_delay else min(300.0, 2.0 ** delivery.attempts)
                try:
                    self.nack(delivery, delay_seconds=delay, error=f"{type(exc).__name__}: {exc}"[:2000])
                except LeaseLost:
                    stale.append(delivery.id)
                else:
                    failed.append(delivery.id)
            else:
                handled.append(delivery)
        acked = self.ack(handled)
        stale += acked.not_acked
        if stale:
            # Not an error of this consumer's code, but work that will be done twice: the
            # handler took longer than the lease (or the subscription was removed).
            log.warning("%d deliveries of %s were handled after their lease ran out and not "
                        "acknowledged (%s); their next holder delivers them again: give the "
                        "subscription a longer lease_seconds than the handler takes",
                        len(stale), client_id, ", ".join(map(str, sorted(stale))))
        lost = set(acked.not_acked)
        return ConsumeResult(delivered=[d.id for d in handled if d.id not in lost], failed=failed,
                             stale=sorted(stale))

    def run_consumer(
        self,
        client_id: str,
        handler: Callable[[Delivery], object],
        *,
        stop: threading.Event,
        batch_size: int = 10,
        consumer: str | None = None,
        idle_poll_seconds: float = 1.0,
    ) -> int:
        """Consume until ``stop`` is set; returns how many deliveries were completed.

        An idle consumer sleeps on LISTEN pgmsg_deliveries and wakes within
        milliseconds of a commit that gives it work; ``idle_poll_seconds`` only
        bounds how late it notices nack delays and lapsed leases.

        A lost connection (the database restarting) does not end it: it pauses
        RECONNECT_PAUSE_SECONDS and goes on with new connections. Deliveries it
        had claimed but not acked come back when their lease lapses.
        """
        done = 0
        with self.listener("pgmsg_deliveries") as wake:
            while not stop.is_set():
                try:
                    result = self.consume(client_id, handler, batch_size=batch_size, consumer=consumer)
                except ConnectionFailed as exc:
                    # The pool replaces broken connections, the listener reconnects by itself.
                    log.warning("consumer of %s lost the database (%s); retrying", client_id, exc)
                    stop.wait(RECONNECT_PAUSE_SECONDS)
                    continue
                done += len(result.delivered)
                if result.delivered or result.failed:
                    continue
                for note in wake.notifications(timeout=idle_poll_seconds, raw=True):
                    if note.payload == client_id or stop.is_set():
                        break
        return done

    def dead_letters(self, client_id: str | None = None) -> list[dict[str, Any]]:
        """Dead deliveries, oldest first, with their last error."""
        with translated("listing dead letters"), self._connection() as conn:
            return conn.execute(
                "SELECT * FROM message_delivery WHERE status = 'dead' "
                "AND (%(c)s::text IS NULL OR client_id = %(c)s) ORDER BY id",
                {"c": client_id},
            ).fetchall()

    def redrive(self, client_id: str | None = None, delivery_ids: Iterable[int] | None = None) -> int:
        """Send dead letters round again (attempts reset); returns how many."""
        ids = None if delivery_ids is None else list(delivery_ids)
        with translated("redriving dead letters"), self._connection() as conn:
            row = conn.execute("SELECT pgmsg_redrive(%s, %s) AS n", (client_id, ids)).fetchone()
        assert row is not None
        return int(row["n"])

    def replay(self, client_id: str, *, from_message_id: int | None = None,
               since: datetime | None = None, until: datetime | None = None) -> int:
        """Deliver a client's messages again, from a message id or in a time window."""
        with translated(f"replaying messages to {client_id!r}"), self._connection() as conn:
            row = conn.execute("SELECT pgmsg_replay(%s, %s, %s, %s) AS n",
                               (client_id, from_message_id, since, until)).fetchone()
        assert row is not None
        return int(row["n"])

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

    def message(self, message_id: int) -> dict[str, Any]:
        """One message by id, as far as row-level security lets this connection's role read it."""
        with translated(f"reading message {message_id}"), self._connection() as conn:
            row = conn.execute("SELECT * FROM messages WHERE id = %s", (message_id,)).fetchone()
        if row is None:
            raise NotFound(f"no message with id {message_id}")
        return row

    def delivery_stats(self, message_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Delivery counts by mode and status for the given messages (a publisher may call it)."""
        with translated("reading delivery stats"), self._connection() as conn:
            return conn.execute("SELECT * FROM pgmsg_delivery_stats(%s)", (list(message_ids),)).fetchall()

    def deliveries(self, message_id: int) -> list[dict[str, Any]]:
        """The deliveries of one message, one dict per row of ``message_delivery``."""
        with translated(f"reading the deliveries of message {message_id}"), self._connection() as conn:
            return conn.execute(
                "SELECT * FROM message_delivery WHERE message_id = %s ORDER BY id", (message_id,)
            ).fetchall()

    def attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        """The HTTP attempts logged for one delivery, oldest first."""
        with translated(f"reading the attempts of delivery {delivery_id}"), self._connection() as conn:
            return conn.execute(
                "SELECT * FROM delivery_attempts WHERE delivery_id = %s ORDER BY attempt", (delivery_id,)
            ).fetchall()

    def retry_failed_http_push(self, client_id: str | None = None) -> list[dict[str, Any]]:
        """Re-send failed HTTP pushes (one client's, or all); returns the outcome of each."""
        with translated("retrying failed HTTP pushes"), self._connection() as conn:
            return conn.execute("SELECT * FROM retry_failed_http_push(%s)", (client_id,)).fetchall()


#: The envelopes of the deliveries a listener was notified of, as row-level security
#: lets its role read them; pgmsg_envelope is the one definition of the envelope.
_READ_REFERENCES = ("SELECT d.id, pgmsg_envelope(m) FROM message_delivery d "
                    "JOIN messages m ON m.id = d.message_id WHERE d.id = ANY (%s::bigint[])")


def _is_reference(payload: Any) -> bool:
    """A pgmsg notification without its message: the default, or an opt-in one whose
    payload was too large for NOTIFY ("payload_omitted")."""
    return (isinstance(payload, dict) and "payload" not in payload
            and type(payload.get("delivery_id")) is int and type(payload.get("id")) is int)


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
        _configure(conn)
        try:
            for channel in self.channels:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
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
                log.warning("listener on %s reconnected after losing its connection", ", ".join(self.channels))
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
                    notes = [Notification(channel=notify.channel,
                                          payload=notify.payload if raw else payload,
                                          pid=notify.pid)
                             for notify in batch
                             if raw or (payload := _notification_json(notify.channel, notify.payload)) is not _NOT_JSON]
                    self._pending.extend(notes if raw else self._read_references(notes))
            except ConnectionFailed:
                self._conn.close()  # lost: reconnected at the top of the loop
                continue

    def _read_references(self, notes: list[Notification]) -> list[Notification]:
        """``notes`` with each reference replaced by the envelope its delivery names, read
        through row-level security as this connection's role; unreadable ones dropped."""
        wanted = {n.payload["delivery_id"] for n in notes
                  if _is_reference(n.payload) and n.payload["delivery_id"] in _BIGINT}
        if not any(_is_reference(n.payload) for n in notes):
            return notes
        assert self._conn is not None
        # A reference that names no possible delivery is dropped below, unread.
        rows = self._conn.execute(_READ_REFERENCES, (sorted(wanted),)).fetchall() if wanted else []
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
                log.warning("dropped a notification on %s: delivery %s of message %s is not readable as this role",
                            note.channel, note.payload["delivery_id"], note.payload["id"])
                continue
            read.append(Notification(channel=note.channel, pid=note.pid, fetched=True,
                                     payload={**envelope, "delivery_id": note.payload["delivery_id"]}))
        return read

    def next(self, timeout: float) -> Notification | None:
        """The next notification, or None when none arrives within ``timeout`` seconds."""
        return next(iter(self.notifications(timeout=timeout, limit=1)), None)
