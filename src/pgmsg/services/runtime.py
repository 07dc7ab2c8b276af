"""What every sample service shares: settings from the environment, logging,
metrics, and a stop event set by SIGTERM / SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass

from pgmsg import metrics
from pgmsg.config import conninfo_from_env
from pgmsg.errors import InvalidInput
from pgmsg.logs import configure_logging


@dataclass(frozen=True)
class ServiceSettings:
    """PGMSG_CLIENT_ID, PGMSG_METRICS_ADDRESS / _PORT and the connection (PGMSG_DSN or PG*)."""

    client_id: str
    conninfo: str
    metrics_address: str
    metrics_port: int | None


def settings(*, needs_client: bool = True) -> ServiceSettings:
    client_id = os.environ.get("PGMSG_CLIENT_ID", "").strip()
    if needs_client and not client_id:
        raise InvalidInput("set PGMSG_CLIENT_ID to the client id this service consumes as")
    port = os.environ.get("PGMSG_METRICS_PORT", "").strip()
    if port and not port.isdigit():
        raise InvalidInput(f"PGMSG_METRICS_PORT must be a port number, not {port!r}")
    return ServiceSettings(
        client_id=client_id,
        conninfo=conninfo_from_env(),
        metrics_address=os.environ.get("PGMSG_METRICS_ADDRESS", "127.0.0.1"),
        metrics_port=int(port) if port else None,
    )


def start(name: str, config: ServiceSettings) -> threading.Event:
    """Log as JSON, serve metrics, and return the event SIGTERM / SIGINT set."""
    configure_logging()
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.metrics_address)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger(f"pgmsg.{name}").info(
        "%s started", name, extra={"fields": {"client_id": config.client_id, "metrics_port": config.metrics_port}}
    )
    return stop
