"""A webhook endpoint that is down, then fails in bursts, then recovers, while the real
dispatcher pushes.

The deployed ``http-dispatcher`` pushes every http delivery of the deployed database too, so
two dispatchers work on this test's deliveries. That is how pgmsg is meant to run (claims are
leases: two dispatchers never push one delivery at the same time), and nothing below depends
on which of them made an attempt.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgmsg import Client, signing
from pgmsg.webhook_receiver import WebhookReceiver
from pgmsg.workers.dispatcher import Dispatcher
from tests.support.waiting import wait_until

MESSAGES = 8
RETRY_BASE_MS = 100
RETRY_MAX_MS = 800
MAX_ATTEMPTS = 60  # never reached here: no delivery may end as a dead letter
# Between the attempt row and next_attempt_at, pgmsg_record_http_attempt takes a second
# clock_timestamp(); allow that much (and no more) beyond the computed backoff.
CLOCK_SLACK = timedelta(milliseconds=500)


def backoff_cap(attempt: int) -> timedelta:
    """The longest delay pgmsg_record_http_attempt may schedule after failed attempt ``attempt``:
    full jitter, random() x min(retry_max_ms, retry_base_ms x 2^(attempt-1))."""
    return timedelta(milliseconds=min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Seen:
    """One request as the receiver saw it, with the delivery's row read while it was in flight."""

    delivery_id: int
    webhook_id: str
    mode: str
    attempt: int  # the delivery's attempts at arrival: this request's attempt number
    next_attempt_at: datetime  # when the SQL allowed this attempt (set when the previous one failed)
    arrived: datetime  # the database's clock at arrival
    signed: bool
    status: int
    duplicate: bool


def header(headers: Mapping[str, str], name: str) -> str:
    return next(v for k, v in headers.items() if k.lower() == name)


class PhasedReceiver(WebhookReceiver):
    """The sample receiver (signature check, exactly-once by webhook-id) behind a switch.

    ``mode``: ``503-a`` / ``503-b`` answer 503 without processing (an overloaded endpoint);
    ``lost-answer`` processes the event, then answers 503 (the answer is lost on the way back,
    so the retry is a duplicate); ``ok`` is the sample receiver as it is.
    """

    def __init__(self, secrets: list[str], port: int, dsn: str) -> None:
        self.processed: Counter[str] = Counter()
        super().__init__(secrets, port=port, on_event=lambda wid, _event: self.processed.update([wid]))
        self.mode = "503-a"
        self.seen: list[Seen] = []
        self._db = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
        self._db_lock = threading.Lock()

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        mode = self.mode
        delivery_id = int(header(headers, "pgmsg-delivery-id"))
        with self._db_lock:
            row = self._db.execute(
                "SELECT attempts, next_attempt_at, clock_timestamp() AS arrived FROM message_delivery "
                "WHERE id = %s",
                (delivery_id,),
            ).fetchone()
        if mode.startswith("503"):
            try:
                signing.verify(self.secrets, headers, body)
                signed = True
            except signing.WebhookVerificationError:
                signed = False
            status, answer, duplicate = 503, {"error": "overloaded"}, False
        else:
            status, answer = super().handle(headers, body)
            signed, duplicate = status != 401, bool(answer.get("duplicate"))
            if mode == "lost-answer" and status == 200:
                status, answer = 503, {"error": "bad gateway"}
        self.seen.append(
            Seen(
                delivery_id,
                header(headers, "webhook-id"),
                mode,
                row["attempts"],
                row["next_attempt_at"],
                row["arrived"],
                signed,
                status,
                duplicate,
            )
        )
        return status, answer

    def stop(self) -> None:
        super().stop()
        self._db.close()


@contextmanager
def running_dispatcher(dsn: str, name: str) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(dsn, name=name, workers=8, per_subscription=4, idle_poll_seconds=0.1)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), kwargs={"ready": ready}, daemon=True)
    thread.start()
    try:
        assert ready.wait(15), "the dispatcher did not start"
        yield dispatcher
    finally:
        stop.set()
        thread.join(timeout=20)
        dispatcher.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM pgmsg_dispatchers WHERE name = %s", (name,))
    assert not thread.is_alive()


def test_outage_then_bursts_then_recovery(client: Client, dsn: str, run_id: str) -> None:
    db = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
    # Bound and never listening: every connection attempt is refused, and the port stays ours.
    placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    placeholder.bind(("127.0.0.1", 0))
    port = placeholder.getsockname()[1]
    receiver: PhasedReceiver | None = None
    try:
        sub = client.subscribe(
            run_id + "-hook",
            "http",
            message_type=run_id + ".*",
            webhook_url=f"http://127.0.0.1:{port}/webhook",
            retry_base_ms=RETRY_BASE_MS,
            retry_max_ms=RETRY_MAX_MS,
            max_attempts=MAX_ATTEMPTS,
            http_timeout_ms=5000,
        )
        assert sub.signing_secret
        with running_dispatcher(dsn, run_id + "-dispatcher"):
            message_ids = client.publish_many(
                [(run_id + ".paid", {"n": i}, "default") for i in range(MESSAGES)]
            )
            deliveries = {
                r["id"]: r["message_id"]
                for r in db.execute(
                    "SELECT id, message_id FROM message_delivery WHERE subscription_id = %s", (sub.id,)
                ).fetchall()
            }
            assert sorted(deliveries.values()) == sorted(message_ids)

            def attempt_counts() -> Counter[int]:
                return Counter(
                    r["delivery_id"]
                    for r in db.execute(
                        "SELECT delivery_id FROM delivery_attempts WHERE delivery_id = ANY(%s)",
                        (list(deliveries),),
                    ).fetchall()
                )

            def each_seen(mode: str, times: int) -> bool:
                counts = Counter(s.delivery_id for s in list(receiver.seen) if s.mode == mode)  # type: ignore[union-attr]
                return all(counts[d] >= times for d in deliveries)

            # 1. Down: connections refused, every delivery retried at least once.
            wait_until(
                lambda: min(attempt_counts()[d] for d in deliveries) >= 2,
                timeout=30,
                message="deliveries were not retried while the endpoint was down",
            )
            # 2. Up, but answering 503 in a burst; then a burst whose answers are lost after the
            #    event was processed; then plain 503 again; then healthy.
            placeholder.close()
            receiver = PhasedReceiver([sub.signing_secret], port, dsn).start()
            wait_until(lambda: each_seen("503-a", 2), timeout=30, message="first 503 burst incomplete")
            receiver.mode = "lost-answer"
            wait_until(
                lambda: each_seen("lost-answer", 1), timeout=30, message="lost-answer burst incomplete"
            )
            receiver.mode = "503-b"
            wait_until(lambda: each_seen("503-b", 1), timeout=30, message="second 503 burst incomplete")
            receiver.mode = "ok"
            final = wait_until(
                lambda: (
                    (
                        rows := db.execute(
                            "SELECT id, status, attempts FROM message_delivery WHERE id = ANY(%s)",
                            (list(deliveries),),
                        ).fetchall()
                    )
                    and all(r["status"] == "delivered" for r in rows)
                    and rows
                ),
                timeout=60,
                message="not every delivery arrived after the endpoint recovered",
            )
        attempts_of = {r["id"]: r["attempts"] for r in final}
        seen = list(receiver.seen)

        # Every delivery arrived, and the receiver recognised each webhook-id exactly once:
        # processed once, every later request for it answered as a duplicate.
        webhook_ids = {s.delivery_id: s.webhook_id for s in seen}
        assert set(webhook_ids) == set(deliveries)
        assert len(set(webhook_ids.values())) == MESSAGES  # one stable id per delivery
        assert all(s.webhook_id == webhook_ids[s.delivery_id] for s in seen)
        assert receiver.processed == Counter({w: 1 for w in webhook_ids.values()})
        assert Counter(a["webhook_id"] for a in receiver.accepted) == receiver.processed
        assert receiver.rejected == [] and all(s.signed for s in seen)
        verified = [s for s in seen if s.mode in ("lost-answer", "ok")]
        first = {}
        for s in sorted(verified, key=lambda s: s.attempt):
            first.setdefault(s.delivery_id, s)
        duplicates = [s for s in verified if s is not first[s.delivery_id]]
        assert all(not s.duplicate for s in first.values()) and all(s.duplicate for s in duplicates)
        assert receiver.counters["duplicate"] == len(duplicates)
        assert {s.delivery_id for s in duplicates} == set(deliveries)  # each retried after being processed

        # The attempt log follows the schedule.
        logged = db.execute(
            "SELECT delivery_id, attempt, attempted_at, status_code, error FROM delivery_attempts "
            "WHERE delivery_id = ANY(%s) ORDER BY delivery_id, attempt",
            (list(deliveries),),
        ).fetchall()
        for delivery_id in deliveries:
            rows = [r for r in logged if r["delivery_id"] == delivery_id]
            received = {s.attempt: s for s in seen if s.delivery_id == delivery_id}
            # Attempt numbers are consecutive and the delivery counted every one of them.
            assert [r["attempt"] for r in rows] == list(range(1, attempts_of[delivery_id] + 1))
            assert len(received) == len([s for s in seen if s.delivery_id == delivery_id])  # one request each
            # Refused while down; from then on every attempt reached the receiver, and the log
            # has the status it answered.
            first_received = min(received)
            assert first_received >= 3
            for r in rows:
                if r["attempt"] < first_received:
                    assert r["status_code"] is None and "Connection refused" in r["error"], r
                else:
                    assert r["status_code"] == received[r["attempt"]].status, r
            assert rows[-1]["status_code"] == 200
            for previous, current in itertools.pairwise(rows):
                # Never earlier than the previous one...
                assert current["attempted_at"] > previous["attempted_at"]
                request = received.get(current["attempt"])
                if request is None:
                    continue  # refused: the receiver saw nothing to compare with
                # ...and, where the receiver could look, no earlier than the SQL scheduled it:
                # the delay it computed is within the full-jitter bound for the failed attempt,
                # and the gap between the two attempts is at least that delay.
                delay = request.next_attempt_at - previous["attempted_at"]
                assert timedelta(0) <= delay <= backoff_cap(previous["attempt"]) + CLOCK_SLACK, (
                    previous,
                    request,
                )
                assert request.arrived >= request.next_attempt_at, request
                assert current["attempted_at"] - previous["attempted_at"] >= delay
    finally:
        placeholder.close()
        if receiver is not None:
            receiver.stop()
        db.close()
