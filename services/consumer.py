"""pgmsg-consumer: an async consumer (the seed's analytics-service and reporting-service).

It claims its client's deliveries with leases, processes each (here: logs it
and counts it by type), acks it, and waits on LISTEN when idle. A delivery
whose processing fails is nacked with backoff and ends as a dead letter after
the subscription's max_attempts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter

from pgmsg import Client, Delivery, metrics, runtime

log = logging.getLogger("pgmsg.consumer")


class TypeTally:
    """The sample processing: count messages per type, log each one."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.by_type: Counter[str] = Counter()

    def __call__(self, delivery: Delivery) -> None:
        with metrics.processing_seconds.labels(self.client_id).time():
            self.by_type[delivery.message_type] += 1
            log.info(
                "processed message",
                extra={
                    "fields": {
                        "client_id": self.client_id,
                        "message_id": delivery.message_id,
                        "delivery_id": delivery.id,
                        "message_type": delivery.message_type,
                        "namespace": delivery.namespace,
                        "attempt": delivery.attempts,
                        "seen_of_type": self.by_type[delivery.message_type],
                    }
                },
            )
        metrics.processed_messages.labels(self.client_id, delivery.delivery_mode).inc()


def run(stop: threading.Event, config: runtime.ServiceSettings, batch_size: int) -> None:
    handler = TypeTally(config.client_id)
    consumer = f"{socket.gethostname()}:{os.getpid()}"

    def session() -> None:
        with Client(config.conninfo, max_size=2) as client:
            client.run_consumer(
                config.client_id, handler, stop=stop, batch_size=batch_size, consumer=consumer
            )

    # The database restarting is routine: reconnect, nothing is lost (leases).
    runtime.reconnecting(stop, session, log=log)


def main() -> int:
    config = runtime.settings()
    stop = runtime.start("consumer", config)
    run(stop, config, int(os.environ.get("PGMSG_BATCH_SIZE", "10")))
    log.info("consumer stopped", extra={"fields": {"client_id": config.client_id}})
    return 0


if __name__ == "__main__":
    time.tzset()
    raise SystemExit(main())
