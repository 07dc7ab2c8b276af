"""Subscriptions: create, list, pause, resume, remove, rotate secrets, sign test events."""

from __future__ import annotations

from typing import Any

from pgmsg.client.codec import _check_bool, _check_int, _check_text, _jsonb
from pgmsg.client.connection import ClientCore
from pgmsg.client.models import MAX_PATTERN_LENGTH, Subscription
from pgmsg.errors import InvalidInput, NotFound, shown, translated

#: The columns of a Subscription but its secret: administrators and monitoring
#: may read these, the signing secrets only the dispatcher and the owning client.
_SUBSCRIPTION_SETTINGS = (
    "id, client_id, delivery_mode, message_type, namespace, webhook_url, notify_channel, "
    "http_timeout_ms, active, push_mode, max_attempts, lease_seconds, payload_filter, ordered, "
    "durable, deactivated_reason, notify_payload, max_in_flight"
)
SUBSCRIPTION_COLUMNS = _SUBSCRIPTION_SETTINGS + ", signing_secret"

#: A new subscription, with the secret given or (http) one the database generates; no row
#: when the same subscription exists.
SUBSCRIBE_NEW = f"""
                WITH secret AS (
                    SELECT coalesce(%(secret)s::text,
                                    CASE WHEN %(mode)s::text = 'http' THEN pgmsg_new_signing_secret() END) AS value
                ), created AS (
                    INSERT INTO subscriptions (client_id, delivery_mode, message_type, namespace,
                                               webhook_url, notify_channel, http_timeout_ms, push_mode,
                                               max_attempts, lease_seconds, retry_base_ms, retry_max_ms,
                                               payload_filter, ordered, durable, notify_payload, signing_secret,
                                               max_in_flight)
                    SELECT %(client)s, %(mode)s, %(type)s, %(namespace)s, %(url)s, %(channel)s, %(timeout)s,
                           %(push_mode)s, %(max_attempts)s, %(lease)s, %(retry_base)s, %(retry_max)s,
                           %(filter)s::jsonb, %(ordered)s, %(durable)s, %(notify_payload)s, secret.value,
                           %(max_in_flight)s
                      FROM secret
                    ON CONFLICT (client_id, delivery_mode, message_type, namespace) DO NOTHING
                    RETURNING {_SUBSCRIPTION_SETTINGS}
                )
                SELECT created.*, secret.value AS signing_secret FROM created, secret
                """

#: The same subscription again: its settings updated and re-activated. Filters are matched
#: as the insert trigger stores them (trimmed, '' is '*').
_SUBSCRIBE_AGAIN = f"""
                    UPDATE subscriptions
                       SET webhook_url = %(url)s, notify_channel = %(channel)s, http_timeout_ms = %(timeout)s,
                           push_mode = %(push_mode)s, max_attempts = %(max_attempts)s, lease_seconds = %(lease)s,
                           retry_base_ms = %(retry_base)s, retry_max_ms = %(retry_max)s,
                           payload_filter = %(filter)s::jsonb, ordered = %(ordered)s, durable = %(durable)s,
                           notify_payload = %(notify_payload)s, max_in_flight = %(max_in_flight)s,
                           {{secret}}
                           active = true
                     WHERE client_id = %(client)s AND delivery_mode = %(mode)s
                       AND message_type = coalesce(NULLIF(btrim(%(type)s::text), ''), '*')
                       AND namespace = coalesce(NULLIF(btrim(%(namespace)s::text), ''), '*')
                    RETURNING {_SUBSCRIPTION_SETTINGS}, %(secret)s::text AS signing_secret
                    """
SUBSCRIBE_AGAIN = _SUBSCRIBE_AGAIN.format(secret="")
#: As SUBSCRIBE_AGAIN, and the subscription's secret replaced by the one given.
SUBSCRIBE_AGAIN_WITH_SECRET = _SUBSCRIBE_AGAIN.format(secret="signing_secret = %(secret)s,")

_LIST_SUBSCRIPTIONS = (
    "SELECT {columns} FROM subscriptions "
    "WHERE %(client)s::text IS NULL OR client_id = %(client)s ORDER BY client_id, id"
)
#: All subscriptions (or one client's), without their secrets.
LIST_SUBSCRIPTIONS = _LIST_SUBSCRIPTIONS.format(columns=_SUBSCRIPTION_SETTINGS)
#: As LIST_SUBSCRIPTIONS, with the secrets (refused to administrators).
LIST_SUBSCRIPTIONS_WITH_SECRETS = _LIST_SUBSCRIPTIONS.format(columns=SUBSCRIPTION_COLUMNS)

ROTATE_SECRET = "SELECT pgmsg_rotate_secret(%s, make_interval(secs => %s), %s) AS secret"

REMOVE_SUBSCRIPTIONS = "DELETE FROM subscriptions WHERE client_id = %s"

#: How many subscriptions a client has, and how many of them are active.
CLIENT_SUBSCRIPTION_COUNTS = (
    "SELECT count(*) AS total, count(*) FILTER (WHERE active) AS active "
    "FROM subscriptions WHERE client_id = %s"
)

#: Pause or resume a client's subscriptions (or one of them); the ids changed.
SET_ACTIVE = """
            UPDATE subscriptions
               SET active = %(active)s,
                   -- resuming clears why it was switched off (e.g. a 410 from the endpoint)
                   deactivated_reason = CASE WHEN %(active)s THEN NULL ELSE deactivated_reason END
             WHERE client_id = %(client)s AND (%(id)s::bigint IS NULL OR id = %(id)s)
            RETURNING id
            """

#: A test event for an http subscription, built and signed by the database (migration 023).
WEBHOOK_TEST_EVENT = "SELECT * FROM pgmsg_webhook_test_event(%s)"

WEBHOOK_ALLOWLIST = "SELECT entry FROM pgmsg_webhook_allowlist ORDER BY entry"

#: Networks no webhook may reach whatever the allowlist says, each with why (migration 028).
BLOCKED_NETWORKS = "SELECT network::text AS network, reason FROM pgmsg_blocked_networks"


class SubscriptionsMixin(ClientCore):
    """Who receives which messages, and how."""

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
        max_in_flight: int | None = None,
    ) -> Subscription:
        """Create (or re-activate and update) a subscription and return it.

        http subscriptions get a generated Standard Webhooks secret unless
        ``signing_secret`` is given; it is in the returned Subscription.
        ``notify_payload`` (notify only) sends the message in the notification,
        where every role that can connect may LISTEN; by default a notification
        carries only ids and the listener reads the message through row-level security.
        ``max_in_flight`` (http only, 1 to 1000) is how many of its webhooks the dispatcher
        has in flight at once; None leaves it to the dispatcher's per_subscription setting.
        Subscribing again sets every setting given here, this one too.
        """
        for name, value in (
            ("client_id", client_id),
            ("delivery_mode", delivery_mode),
            ("message_type", message_type),
            ("namespace", namespace),
            ("push_mode", push_mode),
        ):
            _check_text(name, value)
        for name, value in (
            ("webhook_url", webhook_url),
            ("notify_channel", notify_channel),
            ("signing_secret", signing_secret),
        ):
            _check_text(name, value, optional=True)
        for name, value in (("message_type", message_type), ("namespace", namespace)):
            if len(value) > MAX_PATTERN_LENGTH:
                raise InvalidInput(
                    f"{name} filter {shown(value)} is longer than {MAX_PATTERN_LENGTH} characters; "
                    f"no message has a longer {name}"
                )
        for name, value in (
            ("http_timeout_ms", http_timeout_ms),
            ("max_attempts", max_attempts),
            ("lease_seconds", lease_seconds),
            ("retry_base_ms", retry_base_ms),
            ("retry_max_ms", retry_max_ms),
        ):
            _check_int(name, value)
        if max_in_flight is not None:
            _check_int("max_in_flight", max_in_flight)
        _check_bool("ordered", ordered)
        _check_bool("durable", durable)
        _check_bool("notify_payload", notify_payload)
        filter_value = None if payload_filter is None else _jsonb(payload_filter, "payload_filter")
        settings = {
            "client": client_id,
            "mode": delivery_mode,
            "type": message_type,
            "namespace": namespace,
            "url": webhook_url,
            "channel": notify_channel,
            "timeout": http_timeout_ms,
            "push_mode": push_mode,
            "max_attempts": max_attempts,
            "lease": lease_seconds,
            "retry_base": retry_base_ms,
            "retry_max": retry_max_ms,
            "filter": filter_value,
            "ordered": ordered,
            "durable": durable,
            "notify_payload": notify_payload,
            "secret": signing_secret,
            "max_in_flight": max_in_flight,
        }
        # Administrators may not read signing secrets (only the dispatcher and the
        # owning client may), so the secret shown is the one this call generated or
        # set, never one read back: a new http subscription gets one generated here,
        # an existing one keeps its own unless signing_secret is given.
        with translated(f"subscribing {shown(client_id)}"), self._connection() as conn, conn.transaction():
            row = conn.execute(SUBSCRIBE_NEW, settings).fetchone()
            if row is None:
                row = conn.execute(
                    SUBSCRIBE_AGAIN if signing_secret is None else SUBSCRIBE_AGAIN_WITH_SECRET, settings
                ).fetchone()
        if row is None:
            raise NotFound(
                f"the subscription of {client_id!r} was removed while it was being updated; subscribe again"
            )
        return Subscription(**row)

    def subscriptions(
        self, client_id: str | None = None, *, with_secrets: bool = False
    ) -> list[Subscription]:
        """All subscriptions, or one client's.

        ``with_secrets`` reads the signing secrets too, which only the superuser, the
        dispatcher and the owning client may (an administrator is refused).
        """
        with (
            translated("listing subscriptions" + (" with their secrets" if with_secrets else "")),
            self._connection() as conn,
        ):
            rows = conn.execute(
                LIST_SUBSCRIPTIONS_WITH_SECRETS if with_secrets else LIST_SUBSCRIPTIONS, {"client": client_id}
            ).fetchall()
        return [Subscription(**r) for r in rows]

    def client_subscription_counts(self, client_id: str) -> dict[str, int]:
        """How many subscriptions ``client_id`` has (``total``) and how many are ``active``."""
        with translated(f"looking up client {client_id!r}"), self._connection() as conn:
            row = conn.execute(CLIENT_SUBSCRIPTION_COUNTS, (client_id,)).fetchone()
        assert row is not None
        return {"total": int(row["total"]), "active": int(row["active"])}

    def pause_subscriptions(self, client_id: str, subscription_id: int | None = None) -> list[int]:
        """Stop fanning new messages out to a client's subscriptions (or one of them); the ids
        paused. NotFound when the client has no such subscription."""
        return self._set_active(client_id, False, subscription_id)

    def resume_subscriptions(self, client_id: str, subscription_id: int | None = None) -> list[int]:
        """Activate a client's subscriptions (or one of them) again, clearing why they were
        switched off (e.g. a 410 from the endpoint); the ids resumed."""
        return self._set_active(client_id, True, subscription_id)

    def _set_active(self, client_id: str, active: bool, subscription_id: int | None) -> list[int]:
        with (
            translated(f"{'resuming' if active else 'pausing'} the subscriptions of {client_id!r}"),
            self._connection() as conn,
        ):
            rows = conn.execute(
                SET_ACTIVE, {"active": active, "client": client_id, "id": subscription_id}
            ).fetchall()
        if not rows:
            raise NotFound(f"no subscription with id {subscription_id} for client {client_id!r}")
        return sorted(r["id"] for r in rows)

    def rotate_secret(
        self, subscription_id: int, *, overlap_seconds: int = 86_400, new_secret: str | None = None
    ) -> str:
        """Give an http subscription a new signing secret; the old one stays valid for the overlap."""
        with translated(f"rotating the secret of subscription {subscription_id}"), self._connection() as conn:
            row = conn.execute(ROTATE_SECRET, (subscription_id, overlap_seconds, new_secret)).fetchone()
        assert row is not None
        return str(row["secret"])

    def remove_subscriptions(self, client_id: str) -> int:
        """Delete a client's subscriptions; their open deliveries end as cancelled, all stay for the audit trail."""
        with translated(f"removing the subscriptions of {client_id!r}"), self._connection() as conn:
            cur = conn.execute(REMOVE_SUBSCRIPTIONS, (client_id,))
        if cur.rowcount == 0:
            raise NotFound(f"no subscription for client {client_id!r}")
        return cur.rowcount

    def webhook_test_event(self, subscription_id: int) -> dict[str, Any]:
        """A test event for http subscription ``subscription_id``, signed by the database.

        Its URL and timeout, the body (type ``pgmsg.test``, id 0), a fresh ``test_``
        webhook-id, the database's timestamp and the signature: an administrator may not
        read signing secrets, and gets a signature of the fixed test event only.
        """
        with (
            translated(f"signing a test event for subscription {subscription_id}"),
            self._connection() as conn,
        ):
            row = conn.execute(WEBHOOK_TEST_EVENT, (subscription_id,)).fetchone()
        if row is None:  # the function raises instead; kept for a clear message regardless
            raise NotFound(f"no subscription with id {subscription_id}")
        return row

    def webhook_allowlist(self) -> list[str]:
        """The entries of the webhook allowlist (hosts and networks), sorted."""
        with translated("reading the webhook allowlist"), self._connection() as conn:
            return [r["entry"] for r in conn.execute(WEBHOOK_ALLOWLIST).fetchall()]

    def blocked_networks(self) -> list[tuple[str, str]]:
        """(network, reason) of each network no webhook may reach, whatever the allowlist says."""
        with translated("reading the webhook allowlist"), self._connection() as conn:
            return [(r["network"], r["reason"]) for r in conn.execute(BLOCKED_NETWORKS).fetchall()]
