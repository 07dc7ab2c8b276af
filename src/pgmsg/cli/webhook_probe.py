"""Send a signed test event to an http subscription, the way the dispatcher sends deliveries.

Same headers (Standard Webhooks signature with the current secret, and the
previous one while it is still valid), the same allowlist check right before
sending, the same connection to the address that was checked (no second DNS
lookup), and the subscription's own timeout. Only the body differs: an event
of type ``pgmsg.test`` with id 0, which no message ever has.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg

from pgmsg.errors import InvalidInput, NotFound, translated
from pgmsg.signing import signature_headers
from pgmsg.ssrf import Allowlist, Resolver, check_url
from pgmsg.webhook_http import NoAnswer, post_once

USER_AGENT = "pgmsg-cli/1"
TEST_EVENT_TYPE = "pgmsg.test"
#: How much of the endpoint's answer is shown.
RESPONSE_PREVIEW_BYTES = 300


@dataclass(frozen=True)
class ProbeResult:
    subscription_id: int
    url: str
    webhook_id: str
    status: int | None
    duration_ms: float
    response: str
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def load_target(conn: psycopg.Connection[dict[str, Any]], subscription_id: int) -> dict[str, Any]:
    """The subscription's URL, timeout and the secrets the dispatcher would sign with."""
    with translated(f"reading subscription {subscription_id}"):
        row = conn.execute(
            """
            SELECT id, client_id, delivery_mode, webhook_url, http_timeout_ms, active,
                   array_remove(ARRAY[signing_secret,
                                      CASE WHEN previous_secret_expires_at > now()
                                           THEN previous_signing_secret END], NULL) AS signing_secrets
              FROM subscriptions WHERE id = %s
            """,
            (subscription_id,),
        ).fetchone()
    if row is None:
        raise NotFound(f"no subscription with id {subscription_id}")
    if row["delivery_mode"] != "http" or not row["webhook_url"]:
        raise InvalidInput(f"subscription {subscription_id} is a {row['delivery_mode']} subscription; "
                           "only http subscriptions can be sent a test event")
    if not row["signing_secrets"]:
        raise InvalidInput(f"subscription {subscription_id} has no signing secret; "
                           f"give it one with `pgmsg subscriptions rotate-secret {subscription_id}`")
    return row


def load_allowlist(conn: psycopg.Connection[dict[str, Any]]) -> Allowlist:
    with translated("reading the webhook allowlist"):
        rows = conn.execute("SELECT entry FROM pgmsg_webhook_allowlist ORDER BY entry").fetchall()
    return Allowlist.parse([r["entry"] for r in rows])


def build_test_event(target: dict[str, Any]) -> bytes:
    """The envelope subscribers know, for a test event."""
    event = {
        "id": 0,
        "type": TEST_EVENT_TYPE,
        "namespace": "pgmsg",
        "created_at": datetime.now(timezone.utc).isoformat(),
        "payload": {"test": True, "subscription_id": target["id"], "client_id": target["client_id"]},
    }
    return json.dumps(event, separators=(",", ":")).encode()


def send_test_event(conn: psycopg.Connection[dict[str, Any]], subscription_id: int, *,
                    resolve: Resolver | None = None) -> ProbeResult:
    """POST a signed test event; raises BlockedTarget when the allowlist refuses the URL."""
    target = load_target(conn, subscription_id)
    url = target["webhook_url"]
    addresses = check_url(url, load_allowlist(conn), resolve=resolve)
    body = build_test_event(target)
    # A fresh id each time: receivers drop repeated webhook-ids as duplicates.
    webhook_id = f"test_{subscription_id}_{secrets.token_hex(6)}"
    headers = signature_headers(target["signing_secrets"], webhook_id, body)
    headers.update({
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "pgmsg-message-id": "0",
        "pgmsg-delivery-id": "0",
        "pgmsg-message-type": TEST_EVENT_TYPE,
        "pgmsg-client-id": target["client_id"],
    })
    started = time.monotonic()
    try:
        # To the address just checked, as the dispatcher does (no second lookup).
        answer = post_once(url, addresses[0], headers, body, target["http_timeout_ms"] / 1000.0,
                           ca_file=os.environ.get("PGMSG_WEBHOOK_CA_FILE") or None)
    except NoAnswer as exc:
        return ProbeResult(subscription_id, url, webhook_id, None, _ms(started), "", str(exc))
    preview = answer.body[:RESPONSE_PREVIEW_BYTES].decode("utf-8", errors="replace")
    return ProbeResult(subscription_id, url, webhook_id, answer.status, _ms(started), preview, None)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
