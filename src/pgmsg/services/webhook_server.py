"""pgmsg-webhook-server: the seed's webhook-server, verifying Standard Webhooks signatures.

PGMSG_WEBHOOK_SECRETS (space-separated), PGMSG_WEBHOOK_ADDRESS, PGMSG_WEBHOOK_PORT.
Accepted events are counted in pgmsg_processed_messages_total, refusals in
pgmsg_webhooks_rejected_total.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pgmsg import metrics
from pgmsg.errors import InvalidInput
from pgmsg.services import runtime
from pgmsg.webhook_receiver import SECRETS_VARIABLE, WebhookReceiver

log = logging.getLogger("pgmsg.webhook_server")


class CountingReceiver(WebhookReceiver):
    """The sample receiver, with its refusals counted by reason."""

    def __init__(self, *args: Any, client_id: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client_id = client_id

    def _reject(self, *args: Any, **kwargs: Any) -> Any:
        result = super()._reject(*args, **kwargs)
        reason = (self.rejected[-1]["reason"] if self.rejected else "unknown").split(":")[0][:40]
        metrics.webhooks_rejected.labels(self.client_id, reason).inc()
        return result


def main() -> int:
    config = runtime.settings()
    secrets = os.environ.get(SECRETS_VARIABLE, "").split()
    if not secrets:
        raise InvalidInput(f"set {SECRETS_VARIABLE} to the subscription's signing secret(s)")
    stop = runtime.start("webhook_server", config)

    def on_event(webhook_id: str, event: dict[str, Any]) -> None:
        with metrics.processing_seconds.labels(config.client_id).time():
            log.info("webhook accepted", extra={"fields": {
                "client_id": config.client_id, "webhook_id": webhook_id,
                "message_id": event.get("id"), "message_type": event.get("type")}})
        metrics.processed_messages.labels(config.client_id, "http").inc()

    receiver = CountingReceiver(secrets, os.environ.get("PGMSG_WEBHOOK_ADDRESS", "127.0.0.1"),
                                int(os.environ.get("PGMSG_WEBHOOK_PORT", "8080")), on_event=on_event,
                                client_id=config.client_id)
    receiver.start()
    stop.wait()
    receiver.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
