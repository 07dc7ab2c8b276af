"""pgmsg-webhook-server: the seed's webhook-server, verifying Standard Webhooks signatures.

PGMSG_WEBHOOK_SECRETS (space-separated), PGMSG_WEBHOOK_ADDRESS, PGMSG_WEBHOOK_PORT.
Accepted events are counted in pgmsg_processed_messages_total, refusals in
pgmsg_webhooks_rejected_total.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pgmsg import metrics, runtime
from pgmsg.errors import InvalidInput
from pgmsg.webhook_receiver import SECRETS_VARIABLE, WebhookReceiver

log = logging.getLogger("pgmsg.webhook_server")


def main() -> int:
    config = runtime.settings()
    secrets = os.environ.get(SECRETS_VARIABLE, "").split()
    if not secrets:
        raise InvalidInput(f"set {SECRETS_VARIABLE} to the subscription's signing secret(s)")
    stop = runtime.start("webhook_server", config)

    def on_event(webhook_id: str, event: dict[str, Any]) -> None:
        with metrics.processing_seconds.labels(config.client_id).time():
            log.info(
                "webhook accepted",
                extra={
                    "fields": {
                        "client_id": config.client_id,
                        "webhook_id": webhook_id,
                        "message_id": event.get("id"),
                        "message_type": event.get("type"),
                    }
                },
            )
        metrics.processed_messages.labels(config.client_id, "http").inc()

    def on_reject(status: int, reason: str) -> None:
        # The reason's first words: a bounded set of labels, not one per timestamp or id.
        metrics.webhooks_rejected.labels(config.client_id, reason.split(":")[0][:40]).inc()

    receiver = WebhookReceiver(
        secrets,
        os.environ.get("PGMSG_WEBHOOK_ADDRESS", "127.0.0.1"),
        int(os.environ.get("PGMSG_WEBHOOK_PORT", "8080")),
        on_event=on_event,
        on_reject=on_reject,
    )
    receiver.start()
    stop.wait()
    receiver.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
