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
import threading
import time

from pgmsg import Client, metrics, runtime
from pgmsg.errors import InvalidInput

log = logging.getLogger("pgmsg.fan_out")

#: Most messages one call moves (the function's own limit).
MAX_BATCH = 100_000


class FanOutWorker:
    """Move deferred messages in batches of ``batch`` until ``stop`` is set."""

    def __init__(
        self, conninfo: str, *, batch: int = 1000, poll_seconds: float = 0.01, reconnect_seconds: float = 2.0
    ) -> None:
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
        # A database restart is routine, and so is a deadlock or a lock timeout, which
        # roll the move back whole: what waits stays in message_inbox, for the next try.
        runtime.reconnecting(
            stop,
            lambda: self._drain(stop),
            log=log,
            message="fan-out failed, trying again",
            pause=self.reconnect_seconds,
        )

    def _drain(self, stop: threading.Event) -> None:
        """Connect, then move batch after batch, pausing poll_seconds when none waits."""
        with Client(self.conninfo, min_size=1, max_size=1) as client:
            while not stop.is_set():
                started = time.monotonic()
                moved = client.fan_out_deferred(self.batch)
                if moved:
                    self.moved += moved
                    metrics.deferred_fanned_out.inc(moved)
                    log.debug(
                        "moved deferred messages",
                        extra={
                            "fields": {"moved": moved, "ms": round((time.monotonic() - started) * 1000, 3)}
                        },
                    )
                else:
                    stop.wait(self.poll_seconds)


def main(argv: list[str] | None = None) -> int:
    """pgmsg-fan-out: fan out deferred messages until SIGTERM/SIGINT. Connection from PGMSG_DSN or PG*."""
    parser = runtime.parser("pgmsg-fan-out", main.__doc__)
    parser.add_argument(
        "--batch", help="messages moved per transaction (default PGMSG_FAN_OUT_BATCH, else 1000)"
    )
    parser.add_argument(
        "--poll-ms", help="pause when nothing waits, in ms (default PGMSG_FAN_OUT_POLL_MS, else 10)"
    )
    args = parser.parse_args(argv)
    try:
        batch = int(runtime.setting(args.batch, "--batch", "PGMSG_FAN_OUT_BATCH", "1000", int))
        poll_ms = runtime.setting(args.poll_ms, "--poll-ms", "PGMSG_FAN_OUT_POLL_MS", "10", float)
        config = runtime.settings(
            needs_client=False, metrics_port=args.metrics_port, metrics_flag="--metrics-port"
        )
        worker = FanOutWorker(config.conninfo, batch=batch, poll_seconds=poll_ms / 1000)
    except InvalidInput as exc:
        parser.error(str(exc))
    stop = runtime.start("fan-out", config, batch=worker.batch, poll_ms=poll_ms)
    worker.run(stop)
    log.info("fan-out worker stopped", extra={"fields": {"moved": worker.moved}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
