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

from pgmsg.client import Client
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


def send_test_event(client: Client, subscription_id: int, *, resolve: Resolver | None = None) -> ProbeResult:
    """POST a test event the database signed (:meth:`Client.webhook_test_event`); raises
    BlockedTarget when the allowlist refuses the URL."""
    target = client.webhook_test_event(subscription_id)
    url = target["webhook_url"]
    allowlist = Allowlist.parse(client.webhook_allowlist(), client.blocked_networks())
    addresses = check_url(url, allowlist, resolve=resolve)
    body = target["body"].encode()
    # A fresh id each time (the database draws it): receivers drop repeated webhook-ids.
    webhook_id = target["webhook_id"]
    # The contract's headers for the test event (pgmsg_webhook_headers, migration 028).
    headers = dict(target["headers"])
    started = time.monotonic()
    try:
        # To the address just checked, as the dispatcher does (no second lookup).
        answer = post_once(
            url,
            addresses[0],
            headers,
            body,
            target["http_timeout_ms"] / 1000.0,
            ca_file=os.environ.get("PGMSG_WEBHOOK_CA_FILE") or None,
        )
    except NoAnswer as exc:
        return ProbeResult(subscription_id, url, webhook_id, None, _ms(started), "", str(exc))
    preview = answer.body[:RESPONSE_PREVIEW_BYTES].decode("utf-8", errors="replace")
    return ProbeResult(subscription_id, url, webhook_id, answer.status, _ms(started), preview, None)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
