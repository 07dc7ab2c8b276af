"""Send a signed test event to an http subscription, the way the dispatcher sends deliveries.

Same headers (Standard Webhooks signature with the current secret, and the
previous one while it is still valid, computed by the database so that the
administrator running it never reads a secret), the same allowlist check right before
sending, the same connection to the address that was checked (no second DNS
lookup), and the subscription's own timeout. Only the body differs: an event
of type ``pgmsg.test`` with id 0, which no message ever has.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from pgmsg.errors import NotFound, translated
from pgmsg.ssrf import Allowlist, Resolver, check_url
from pgmsg.webhook_http import NoAnswer, post_once

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
    """The subscription's URL and timeout, and the test event the database built and signed.

    The database signs (pgmsg_webhook_test_event, migration 023): an administrator may
    not read signing secrets, and gets a signature of the fixed test event only, under
    a fresh ``test_`` webhook-id and the database's clock, never one of its choosing.
    """
    with translated(f"signing a test event for subscription {subscription_id}"):
        row = conn.execute("SELECT * FROM pgmsg_webhook_test_event(%s)", (subscription_id,)).fetchone()
    if row is None:     # the function raises instead; kept for a clear message regardless
        raise NotFound(f"no subscription with id {subscription_id}")
    return row


def load_allowlist(conn: psycopg.Connection[dict[str, Any]]) -> Allowlist:
    with translated("reading the webhook allowlist"):
        rows = conn.execute("SELECT entry FROM pgmsg_webhook_allowlist ORDER BY entry").fetchall()
        blocked = conn.execute("SELECT network::text AS network, reason FROM pgmsg_blocked_networks").fetchall()
    return Allowlist.parse([r["entry"] for r in rows], [(r["network"], r["reason"]) for r in blocked])


def send_test_event(conn: psycopg.Connection[dict[str, Any]], subscription_id: int, *,
                    resolve: Resolver | None = None) -> ProbeResult:
    """POST a signed test event; raises BlockedTarget when the allowlist refuses the URL."""
    target = load_target(conn, subscription_id)
    url = target["webhook_url"]
    addresses = check_url(url, load_allowlist(conn), resolve=resolve)
    body = target["body"].encode()
    # A fresh id each time (the database draws it): receivers drop repeated webhook-ids.
    webhook_id = target["webhook_id"]
    # The contract's headers for the test event (pgmsg_webhook_headers, migration 028).
    headers = dict(target["headers"])
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
