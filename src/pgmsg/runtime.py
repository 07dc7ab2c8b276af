"""What every long-running pgmsg process shares: the sample services, the dispatcher
and the fan-out worker start the same way.

- settings from the environment: the connection (PGMSG_DSN or PG*), PGMSG_CLIENT_ID,
  PGMSG_METRICS_ADDRESS and PGMSG_METRICS_PORT (a command-line flag may override a
  variable: :func:`setting`, :func:`parser`);
- JSON log lines (pgmsg.logs), Prometheus metrics on PGMSG_METRICS_PORT, and a stop
  event set by SIGTERM / SIGINT (:func:`start`);
- reconnecting when the database goes away (:func:`reconnecting`): a restart is
  routine, and nothing is lost meanwhile (leases, message_inbox).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from pgmsg import metrics
from pgmsg.config import conninfo_from_env
from pgmsg.errors import InvalidInput, PgmsgError
from pgmsg.logs import configure_logging

#: Environment variables of the metrics endpoint.
METRICS_PORT_VARIABLE = "PGMSG_METRICS_PORT"
METRICS_ADDRESS_VARIABLE = "PGMSG_METRICS_ADDRESS"


@dataclass(frozen=True)
class ServiceSettings:
    """PGMSG_CLIENT_ID, PGMSG_METRICS_ADDRESS / _PORT and the connection (PGMSG_DSN or PG*)."""

    client_id: str
    conninfo: str
    metrics_address: str
    metrics_port: int | None


def settings(
    *, needs_client: bool = True, metrics_port: str | None = None, metrics_flag: str | None = None
) -> ServiceSettings:
    """The settings from the environment; ``metrics_port`` (the value of a command's
    ``metrics_flag``, see :func:`parser`) overrides PGMSG_METRICS_PORT; 0 means no metrics."""
    client_id = os.environ.get("PGMSG_CLIENT_ID", "").strip()
    if needs_client and not client_id:
        raise InvalidInput("set PGMSG_CLIENT_ID to the client id this service consumes as")
    port = int(setting(metrics_port, metrics_flag, METRICS_PORT_VARIABLE, "0", int))
    return ServiceSettings(
        client_id=client_id,
        conninfo=conninfo_from_env(),
        metrics_address=os.environ.get(METRICS_ADDRESS_VARIABLE, "127.0.0.1"),
        metrics_port=port or None,
    )


def setting(value: str | None, option: str | None, env: str, default: str, kind: type) -> float:
    """A command-line value (of ``option``, if the command has one), else the environment
    variable, else the default, as a number."""
    text = value if value is not None else (os.environ.get(env, "").strip() or default)
    try:
        return kind(text)
    except ValueError:
        raise InvalidInput(
            f"{option + ' (' + env + ')' if option else env} must be a number, not {text!r}"
        ) from None


def parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A worker's command line, with the --metrics-port flag every worker takes."""
    found = argparse.ArgumentParser(prog=prog, description=description)
    found.add_argument(
        "--metrics-port",
        help=f"serve Prometheus metrics on this port (default {METRICS_PORT_VARIABLE}; 0 for none)",
    )
    return found


def start(name: str, config: ServiceSettings, /, **fields: object) -> threading.Event:
    """Log as JSON, serve metrics, and return the event SIGTERM / SIGINT set.

    The "<name> started" line carries the client id, the metrics port and ``fields``.
    """
    configure_logging()
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.metrics_address)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("pgmsg." + name.replace("-", "_")).info(
        "%s started",
        name,
        extra={"fields": {"client_id": config.client_id, "metrics_port": config.metrics_port, **fields}},
    )
    return stop


def reconnecting(
    stop: threading.Event,
    session: Callable[[], None],
    *,
    log: logging.Logger,
    message: str = "database unavailable, reconnecting",
    pause: float = 2.0,
    on_lost: Callable[[], None] | None = None,
) -> None:
    """Run ``session`` (connect, then work until ``stop``) again and again until ``stop`` is set.

    A session ended by the database (PgmsgError, psycopg.Error) is logged as a warning
    with ``message``; ``on_lost`` then drops what the session held, and the next one
    starts ``pause`` seconds later.
    """
    while not stop.is_set():
        try:
            session()
        except (PgmsgError, psycopg.Error) as exc:
            log.warning(message, extra={"fields": {"error": str(exc), "retry_in_seconds": pause}})
            if on_lost is not None:
                on_lost()
            stop.wait(pause)
