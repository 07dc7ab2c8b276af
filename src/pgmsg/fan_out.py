"""pgmsg-fan-out: the worker that fans out messages published with deferred fan-out.

A deferred publish (``Client.publish(..., deferred=True)``, or an INSERT into
message_inbox) commits the message alone; this worker moves what has been
committed into messages, in batches, where the fan-out trigger creates the
deliveries and wakes the consumers. It polls: a publisher's NOTIFY would make
every deferred publish take the commit-time lock NOTIFY takes, the cost the
deferred publish is there to avoid. While messages keep coming it moves batch
after batch without pausing; when none waits it sleeps ``poll_seconds``.

Any number of workers may run: one moves at a time (the function takes an
advisory lock), the others find nothing to do. pg_cron's housekeeping job
(housekeeping_fan_out_deferred_schedule) moves what is left when none runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import psycopg
from prometheus_client import Counter

from pgmsg import Client
from pgmsg.errors import InvalidInput, PgmsgError

log = logging.getLogger("pgmsg.fan_out")

fanned_out = Counter("pgmsg_deferred_fanned_out_total", "Deferred messages moved into messages and fanned out")

#: Most messages one call moves (the function's own limit).
MAX_BATCH = 100_000


class FanOutWorker:
    """Move deferred messages in batches of ``batch`` until ``stop`` is set."""

    def __init__(self, conninfo: str, *, batch: int = 1000, poll_seconds: float = 0.01,
                 reconnect_seconds: float = 2.0) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
            raise InvalidInput(f"the fan-out batch must be 1-{MAX_BATCH} messages, not {batch!r}")
        if not 0.001 <= poll_seconds <= 60:
            raise InvalidInput(f"the fan-out poll interval must be 1 ms to 60 s, not {poll_seconds!r} s")
        self.conninfo = conninfo
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.reconnect_seconds = reconnect_seconds
        self.moved = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with Client(self.conninfo, min_size=1, max_size=1) as client:
                    self._drain(client, stop)
            except (PgmsgError, psycopg.Error) as exc:
                # A database restart is routine, and so is a deadlock or a lock timeout, which
                # roll the move back whole: what waits stays in message_inbox, for the next try.
                log.warning("fan-out failed, trying again", extra={"fields": {
                    "error": str(exc), "retry_in_seconds": self.reconnect_seconds}})
                stop.wait(self.reconnect_seconds)

    def _drain(self, client: Client, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            moved = client.fan_out_deferred(self.batch)
            if moved:
                self.moved += moved
                fanned_out.inc(moved)
                log.debug("moved deferred messages", extra={"fields": {
                    "moved": moved, "ms": round((time.monotonic() - started) * 1000, 3)}})
            else:
                stop.wait(self.poll_seconds)


def _setting(value: str | None, option: str, env: str, default: str, kind: type) -> float:
    """A command-line value, else the environment variable, else the default, as a number."""
    text = value if value is not None else (os.environ.get(env, "").strip() or default)
    try:
        return kind(text)
    except ValueError:
        raise InvalidInput(f"{option} ({env}) must be a number, not {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """pgmsg-fan-out: fan out deferred messages until SIGTERM/SIGINT. Connection from PGMSG_DSN or PG*."""
    import argparse
    import dataclasses

    from pgmsg.services import runtime

    parser = argparse.ArgumentParser(prog="pgmsg-fan-out", description=main.__doc__)
    parser.add_argument("--batch", help="messages moved per transaction (default PGMSG_FAN_OUT_BATCH, else 1000)")
    parser.add_argument("--poll-ms", help="pause when nothing waits, in ms (default PGMSG_FAN_OUT_POLL_MS, else 10)")
    parser.add_argument("--metrics-port",
                        help="serve Prometheus metrics on this port (default PGMSG_METRICS_PORT; 0 for none)")
    args = parser.parse_args(argv)
    try:
        batch = int(_setting(args.batch, "--batch", "PGMSG_FAN_OUT_BATCH", "1000", int))
        poll_ms = _setting(args.poll_ms, "--poll-ms", "PGMSG_FAN_OUT_POLL_MS", "10", float)
        metrics_port = int(_setting(args.metrics_port, "--metrics-port", "PGMSG_METRICS_PORT", "0", int))
        config = dataclasses.replace(runtime.settings(needs_client=False), metrics_port=metrics_port or None)
        worker = FanOutWorker(config.conninfo, batch=batch, poll_seconds=poll_ms / 1000)
    except InvalidInput as exc:
        parser.error(str(exc))
    # The sample services' start: JSON logs, metrics, and the event SIGTERM / SIGINT set.
    stop = runtime.start("fan-out", config)
    log.info("fan-out worker started", extra={"fields": {"batch": worker.batch, "poll_ms": poll_ms}})
    worker.run(stop)
    log.info("fan-out worker stopped", extra={"fields": {"moved": worker.moved}})
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
