"""Recording the dispatcher's pushes: one thread writes the attempts, many per transaction.

Whatever finished while the previous batch was being written goes into the next
(pgmsg_record_http_attempts), so an idle dispatcher records each push at once and
a busy one pays one commit for many webhooks instead of one each. The same thread
gives back deliveries that were claimed but never sent (their lease ran out while
they waited for a request slot).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pgmsg import metrics
from pgmsg.client.dispatch_store import DispatchStore
from pgmsg.errors import ConnectionFailed, PgmsgError

log = logging.getLogger("pgmsg.dispatcher")

#: Most pushes recorded in one transaction.
RECORD_BATCH = 500


@dataclass
class Finished:
    """A push made, waiting for its outcome to be recorded."""

    row: dict[str, Any]
    code: int | None
    error: str | None
    duration_ms: float
    retry_after: float | None
    record_until: float  # time.monotonic() by which it must be recorded (the lease)


class Recorder:
    """Records finished pushes and gives back unsent claims, on a thread started with the first.

    ``released`` is called with the delivery ids the dispatcher no longer holds:
    recorded (or not, their lease having passed on) or given back.
    """

    def __init__(self, store: DispatchStore, released: Callable[[Iterable[int]], None]) -> None:
        self._store = store
        self._released = released
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._finished: list[Finished] = []
        # Claimed deliveries whose lease ran out while they waited for a request slot.
        self._unsent: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._closing = False
        #: Pushes recorded.
        self.pushed = 0
        #: Pushes whose record was not applied: their lease had passed on (see record).
        self.lost_leases = 0
        #: Claimed deliveries given back unsent: their lease ran out waiting for a slot.
        self.given_back = 0

    def add(self, finished: Finished) -> None:
        """Record this push soon. If it is not recorded, the delivery waits for its whole lease."""
        with self._lock:
            self._finished.append(finished)
            self._wake()

    def add_unsent(self, row: dict[str, Any]) -> None:
        """Give this claimed, unsent delivery back soon."""
        with self._lock:
            self._unsent.append(row)
            self._wake()

    def _wake(self) -> None:
        """Start the thread if it is not running, and wake it (called with the lock held)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="pgmsg-record", daemon=True)
            self._thread.start()
        self._ready.notify()

    def close(self) -> None:
        """Record what is waiting, then stop the thread."""
        with self._lock:
            self._closing = True
            self._ready.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        """Record finished pushes, as many per transaction as finished meanwhile, until closed."""
        while True:
            with self._lock:
                while not self._finished and not self._unsent and not self._closing:
                    self._ready.wait()
                if not self._finished and not self._unsent:
                    return
                batch, self._finished = self._finished[:RECORD_BATCH], self._finished[RECORD_BATCH:]
                unsent, self._unsent = self._unsent, []
            try:
                if unsent:
                    self.give_back(unsent)
                if batch:
                    self.record(batch)
            except Exception:  # the thread must survive; unrecorded pushes wait for their lease
                log.exception("recording %d pushes failed unexpectedly", len(batch))
                self._released([f.row["delivery_id"] for f in batch] + [row["delivery_id"] for row in unsent])

    def record(self, batch: list[Finished]) -> None:
        """Record the outcomes of finished pushes in one transaction.

        A connection lost meanwhile (the database restarted) is replaced and the
        record retried until shortly before the first lease lapses (see
        DispatchStore.fetch); the retry records only what is still claimed for
        that push. If the batch fails for another reason, each push is recorded
        on its own, so one bad row cannot hold back the others.
        """
        try:
            outcomes = self._record_rows(batch)
        except ConnectionFailed:
            log.error(
                "could not record %d pushes: the database is unreachable; they will be pushed "
                "again when their leases lapse",
                len(batch),
            )
            outcomes = {}
        except PgmsgError:
            outcomes = {}
            if len(batch) == 1:
                log.exception("recording the push of delivery %s failed", batch[0].row["delivery_id"])
            else:
                for one in batch:
                    try:
                        outcomes.update(self._record_rows([one]))
                    except PgmsgError:
                        log.exception("recording the push of delivery %s failed", one.row["delivery_id"])
        lost = sorted(delivery_id for delivery_id, status in outcomes.items() if status is None)
        for status in outcomes.values():
            metrics.webhooks_pushed.labels(status or "lease_lost").inc()
        if lost:
            # The delivery was released, claimed again or made a dead letter meanwhile:
            # its current state is the current holder's, and this outcome is dropped.
            log.warning(
                "%d pushes not recorded: their lease had passed on (deliveries %s)",
                len(lost),
                ", ".join(map(str, lost[:20])),
            )
        with self._lock:
            self.pushed += len(outcomes) - len(lost)
            self.lost_leases += len(lost)
        self._released(f.row["delivery_id"] for f in batch)

    def _record_rows(self, batch: list[Finished]) -> dict[int, str | None]:
        what = (
            f"recording the push of delivery {batch[0].row['delivery_id']}"
            if len(batch) == 1
            else f"recording {len(batch)} pushes"
        )
        return self._store.record(
            what,
            [f.row["delivery_id"] for f in batch],
            [f.row["lease_token"] for f in batch],
            [f.code for f in batch],
            [f.error for f in batch],
            [f.duration_ms for f in batch],
            [f.retry_after for f in batch],
            retry_until=min(f.record_until for f in batch),
        )

    def give_back(self, rows: list[dict[str, Any]]) -> int:
        """Give back claimed deliveries that were not requested: pending again, the attempt undone.

        Only where this dispatcher still holds the lease; one that passed on is
        left to its holder. Returns how many were given back.
        """
        try:
            given = self._store.give_back(
                [r["delivery_id"] for r in rows],
                [r["lease_token"] for r in rows],
                retry_until=time.monotonic() + 5,
            )
        except PgmsgError:
            # Their leases have run out or are about to: they are claimable again anyway.
            log.exception("giving back %d unsent deliveries failed", len(rows))
            given = []
        log.warning(
            "%d deliveries waited for a request slot until too little of their lease was left; "
            "given back unsent: %d (lease_seconds must exceed the endpoints' http_timeout_ms)",
            len(rows),
            len(given),
        )
        with self._lock:
            self.given_back += len(given)
        self._released(r["delivery_id"] for r in rows)
        return len(given)
