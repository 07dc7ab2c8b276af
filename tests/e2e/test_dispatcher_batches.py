"""Batched recording of pushes and the per-subscription cap, on a scratch server.

The deployed dispatcher claims every due push on the deployed database, so a
test there cannot tell which dispatcher pushed, recorded or capped what. Here
the only dispatcher is the test's own."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgmsg import Client
from pgmsg.workers.dispatcher import Dispatcher
from tests.support.dispatching import running
from tests.support.receiver import Received, Receiver, Reply
from tests.support.scratch import scratch_database_fixtures
from tests.support.waiting import wait_until

# The deployed dispatcher would claim what these tests claim by hand: a server of their own.
dsn, client, db = scratch_database_fixtures()


@pytest.fixture
def run_id() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def dispatcher(dsn: str) -> Iterator[Dispatcher]:
    with running(dsn, name="test-dispatcher", workers=8, per_subscription=2, idle_poll_seconds=0.2) as d:
        yield d


def delivery(client: Client, message_id: int) -> dict[str, Any]:
    [row] = client.deliveries(message_id)
    return row


class ByPayload:
    """The receiver answers the status a message asks for (payload "want") on its first
    request, 200 after; counts the requests in flight at once."""

    def __init__(self, receiver: Receiver) -> None:
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.active = self.most_active = 0
        self.delay = 0.0
        self.url = receiver.url
        receiver.respond = self.respond

    def respond(self, request: Received) -> Reply:
        webhook_id = request.headers["webhook-id"]
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            first = webhook_id not in self.seen
            self.seen.add(webhook_id)
        try:
            time.sleep(self.delay)
            want = request.json["payload"]["want"]
        finally:
            # Counted out before the answer leaves: the dispatcher may start its next
            # request as soon as it has the answer, before this thread runs again.
            with self.lock:
                self.active -= 1
        return Reply(want if first else 200, body=b"")


@pytest.fixture
def by_payload(receiver: Receiver) -> ByPayload:
    return ByPayload(receiver)


def test_batched_recording_records_every_attempt(
    client: Client, dispatcher: Dispatcher, by_payload: ByPayload, db: psycopg.Connection[Any], run_id: str
) -> None:
    """Many pushes finishing together are recorded in shared transactions, each exactly
    as pgmsg_record_http_attempt decides: delivered, failed for good, retried, gone."""
    by_payload.delay = 0.05
    client.subscribe(
        run_id + "-many",
        "http",
        message_type=run_id + ".*",
        webhook_url=by_payload.url,
        retry_base_ms=20,
        retry_max_ms=50,
    )
    wants = [200, 404, 503, 201] * 10
    ids = client.publish_many([(run_id + ".m", {"want": w}, "default") for w in wants])
    expected = {
        200: ("delivered", [200]),
        201: ("delivered", [201]),
        404: ("failed", [404]),
        503: ("delivered", [503, 200]),
    }

    def settled() -> bool:
        rows = [delivery(client, m) for m in ids]
        return all(r["status"] in ("delivered", "failed") for r in rows)

    wait_until(settled, timeout=30)
    for message_id, want in zip(ids, wants, strict=False):
        row = delivery(client, message_id)
        status, codes = expected[want]
        attempts = client.attempts(row["id"])
        assert (row["status"], [a["status_code"] for a in attempts]) == (status, codes), (message_id, want)
        assert [a["attempt"] for a in attempts] == list(range(1, len(codes) + 1))
        assert row["attempts"] == len(codes) and row["push_status_code"] == codes[-1]
        assert row["retry_count"] == (0 if want in (200, 201) else 1)
        assert row["lease_expires_at"] is None
        if status == "delivered":  # 2xx answers are recorded in bulk (012): the same columns as one by one
            assert row["last_error"] is None and row["dead_at"] is None
            assert row["push_attempted_at"] <= row["delivered_at"], row
    # per_subscription=2 in the fixture: the cap holds while 40 deliveries are due at once.
    assert by_payload.most_active <= 2
    recorded = db.execute(
        "SELECT count(*) AS n FROM delivery_attempts a JOIN message_delivery d ON d.id = a.delivery_id "
        "WHERE d.client_id = %s",
        (run_id + "-many",),
    ).fetchone()
    assert recorded["n"] == sum(len(expected[w][1]) for w in wants)


def test_recording_retried_after_a_lost_connection_records_once(
    client: Client, dsn: str, db: psycopg.Connection[Any], run_id: str
) -> None:
    """The recorder's connection dies: the batch is recorded on a new one, only for the
    deliveries still claimed for those pushes, and a second try records nothing twice."""
    from pgmsg.client.dispatch_store import RECORD
    from pgmsg.workers.recording import Finished

    client.subscribe(
        run_id + "-lost", "http", message_type=run_id + ".*", webhook_url="http://127.0.0.1:9/hook"
    )
    ids = client.publish_many([(run_id + ".x", {"n": i}, "default") for i in range(5)])
    d = Dispatcher(dsn, name=run_id + "-recorder", workers=1)
    try:
        sub = db.execute("SELECT id FROM subscriptions WHERE client_id = %s", (run_id + "-lost",)).fetchone()[
            "id"
        ]
        others = (
            db.execute(
                "SELECT array_agg(id) AS ids FROM subscriptions WHERE delivery_mode = 'http' AND id <> %s",
                (sub,),
            ).fetchone()["ids"]
            or []
        )
        rows = (
            d.store.connection()
            .execute(
                "SELECT * FROM pgmsg_claim_http_slots(100, 10, %s, 60, %s::bigint[], %s::integer[])",
                (d.name, others, [10] * len(others)),
            )
            .fetchall()
        )
        assert sorted(r["message_id"] for r in rows) == sorted(ids)
        batch = [
            Finished(r, 200 if i % 2 else 503, None, 1.5, None, time.monotonic() + 30)
            for i, r in enumerate(rows)
        ]
        pid = d.store.connection().execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        d.record(
            batch
        )  # the first try fails, the retry (under the same lease tokens) records on a new connection
        # The retry's statement again, as after an answer lost behind a commit: nothing twice.
        params = {
            "ids": [r["delivery_id"] for r in rows],
            "tokens": [r["lease_token"] for r in rows],
            "codes": [200] * len(rows),
            "errors": [None] * len(rows),
            "durations": [1.0] * len(rows),
            "retry_after": [None] * len(rows),
        }
        again = d.store.connection().execute(RECORD, params).fetchall()
        assert [r["status"] for r in again] == [None] * len(rows)
        for i, r in enumerate(rows):
            row = delivery(client, r["message_id"])
            assert row["status"] == ("delivered" if i % 2 else "pending")
            assert [a["status_code"] for a in client.attempts(row["id"])] == [200 if i % 2 else 503]
        assert d.pushed == len(rows)
    finally:
        d.close()
