"""pgmsg-listener: a NOTIFY listener (the seed's dashboard-service and admin-portal).

It LISTENs on its channel and handles each notification in real time. A
notification is a reference (message and delivery ids) unless the subscription
opted in to notify_payload; Client.listener reads the message as this
service's role, through row-level security, before handing it over.
"""

from __future__ import annotations

import logging
import os
import threading

from pgmsg import Client, metrics, runtime

log = logging.getLogger("pgmsg.listener")


def run(stop: threading.Event, config: runtime.ServiceSettings, channel: str) -> None:
    def session() -> None:
        with Client(config.conninfo, max_size=1) as client, client.listener(channel) as listener:
            log.info("listening", extra={"fields": {"client_id": config.client_id, "channel": channel}})
            while not stop.is_set():
                for note in listener.notifications(timeout=1.0, limit=1):
                    with metrics.processing_seconds.labels(config.client_id).time():
                        envelope = note.payload
                        log.info(
                            "notification",
                            extra={
                                "fields": {
                                    "client_id": config.client_id,
                                    "channel": note.channel,
                                    "message_id": envelope["id"],
                                    "message_type": envelope["type"],
                                    "delivery_id": envelope.get("delivery_id"),
                                }
                            },
                        )
                    metrics.processed_messages.labels(config.client_id, "notify").inc()

    # The database restarting is routine: connect and listen again.
    runtime.reconnecting(stop, session, log=log)


def main() -> int:
    config = runtime.settings()
    stop = runtime.start("listener", config)
    run(stop, config, os.environ.get("PGMSG_NOTIFY_CHANNEL") or config.client_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
