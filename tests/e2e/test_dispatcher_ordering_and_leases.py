"""Ordering per key and leases for HTTP push, from the receiver's and the operator's side.

README ("HTTP push"): an ordered http subscription gets the messages of one key one at a
time, in publish order, a failing message holding back its key (and only its key) until it
is delivered, failed for good or dead; and a push is recorded only under the lease it was
claimed with, so a dispatcher that lost its lease can neither send a webhook-id another push
is sending nor overwrite the outcome the current holder recorded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgmsg import Client
from pgmsg.workers.dispatcher import Dispatcher
from pgmsg.workers.recording import Finished
from tests.support.dispatching import running
from tests.support.receiver import Received, Receiver, Reply
from tests.support.scratch import scratch_database_fixtures
from tests.support.waiting import wait_until

# The deployed dispatcher would claim what these tests claim by hand: a server of their own.
dsn, client, db = scratch_database_fixtures()


class Keyed:
    """The receiver's answers by the message's payload: {"fail": n} gets 503 (Retry-After: 2)
    n times, then 200; {"gone": true} gets 404. Records (start, end, key, n, webhook-id) and
    the most requests of a key in flight at once."""

    def __init__(self, receiver: Receiver) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[float, float, str, int, str, int]] = []
        self.tries: dict[str, int] = {}
        self.active: dict[str, int] = {}
        self.most_active: dict[str, int] = {}
        self.delay = 0.02
        self.url = receiver.url
        receiver.respond = self.respond

    def respond(self, request: Received) -> Reply:
        payload, webhook_id = request.json["payload"], request.headers["webhook-id"]
        key = payload["key"]
        with self.lock:
            self.active[key] = self.active.get(key, 0) + 1
            self.most_active[key] = max(self.most_active.get(key, 0), self.active[key])
            tries = self.tries[webhook_id] = self.tries.get(webhook_id, 0) + 1
        started = time.monotonic()
        time.sleep(self.delay)
        if payload.get("gone"):
            status, headers = 404, {}
        elif tries <= payload.get("fail", 0):
            status, headers = 503, {"Retry-After": "2"}
        else:
            status, headers = 200, {}
        with self.lock:
            self.active[key] -= 1
            self.seen.append((started, time.monotonic(), key, payload["n"], webhook_id, status))
        return Reply(status, headers, b"")


@pytest.fixture
def keyed(receiver: Receiver) -> Keyed:
    return Keyed(receiver)


def statuses(db: psycopg.Connection[Any], client_id: str) -> list[str]:
    return [
        r["status"]
        for r in db.execute(
            "SELECT status FROM message_delivery WHERE client_id = %s ORDER BY id", (client_id,)
        )
    ]


# -- item 10: ordering per key ------------------------------------------------------


def test_ordered_http_subscription_holds_a_failing_key_back_and_only_that_key(
    client: Client, keyed: Keyed, db: psycopg.Connection[Any], dsn: str, run_id: str
) -> None:
    """m1 of key a is answered 503 twice (Retry-After 2 s): the receiver sees m1 three times
    before m2 of key a, while key b's messages go through meanwhile, one at a time, in order;
    c1 fails for good (404) and releases c2."""
    client.subscribe(
        run_id + "-ord",
        "http",
        message_type=run_id + ".*",
        webhook_url=keyed.url,
        ordered=True,
        retry_base_ms=10,
        retry_max_ms=20,
    )
    plan = [
        ("a", {"fail": 2}),
        ("b", {}),
        ("a", {}),
        ("b", {}),
        ("c", {"gone": True}),
        ("b", {}),
        ("c", {}),
        ("a", {}),
        ("b", {}),
        ("b", {}),
    ]
    with running(dsn, name=run_id + "-disp", workers=8, per_subscription=4, idle_poll_seconds=0.1):
        for n, (key, extra) in enumerate(plan):
            client.publish(run_id + ".e", {"key": key, "n": n, **extra}, key=key)
        wait_until(
            lambda: (
                set(statuses(db, run_id + "-ord")) <= {"delivered", "failed"}
                and len(statuses(db, run_id + "-ord")) == len(plan)
            ),
            timeout=30,
            message="every delivery settled",
        )
    seen = list(keyed.seen)
    by_key = {k: [n for _, _, key, n, _, _ in sorted(seen) if key == k] for k in "abc"}
    assert by_key["a"] == [0, 0, 0, 2, 7]  # m1 three times, then the others in order
    assert by_key["b"] == [1, 3, 5, 8, 9]
    assert by_key["c"] == [4, 6]  # the 404 released its key
    assert keyed.most_active == {"a": 1, "b": 1, "c": 1}
    # Key b did not wait for key a's retries: all of b was answered before m1's last try began.
    last_try_of_m1 = max(start for start, _, key, n, _, _ in seen if n == 0)
    assert max(end for _, end, key, _, _, _ in seen if key == "b") < last_try_of_m1
    assert statuses(db, run_id + "-ord").count("failed") == 1


def test_unordered_http_subscription_still_pushes_a_key_concurrently(
    client: Client, keyed: Keyed, db: psycopg.Connection[Any], dsn: str, run_id: str
) -> None:
    """Ordering is per subscription: without ``ordered`` the messages of one key are pushed
    side by side (the per-subscription cap is the only limit)."""
    keyed.delay = 0.2
    client.subscribe(run_id + "-free", "http", message_type=run_id + ".*", webhook_url=keyed.url)
    with running(dsn, name=run_id + "-disp", workers=8, per_subscription=4, idle_poll_seconds=0.1):
        client.publish_many([(run_id + ".e", {"key": "k", "n": n}, "default") for n in range(8)])
        wait_until(lambda: statuses(db, run_id + "-free") == ["delivered"] * 8, timeout=30)
    assert keyed.most_active["k"] > 1


# -- item 11: records under the lease they were claimed with -------------------------


def _claim_only(
    d: Dispatcher, db: psycopg.Connection[Any], client_id: str, lease_seconds: int
) -> list[dict[str, Any]]:
    """Claim as dispatcher ``d`` the due pushes of ``client_id``'s subscription (and no other's)."""
    sub = db.execute("SELECT id FROM subscriptions WHERE client_id = %s", (client_id,)).fetchone()["id"]
    others = db.execute(
        "SELECT coalesce(array_agg(id), '{}') AS ids FROM subscriptions "
        "WHERE delivery_mode = 'http' AND id <> %s",
        (sub,),
    ).fetchone()["ids"]
    return (
        d.store.connection()
        .execute(
            "SELECT * FROM pgmsg_claim_http_slots(100, 10, %s, %s, %s::bigint[], %s::integer[])",
            (d.name, lease_seconds, others, [10] * len(others)),
        )
        .fetchall()
    )


def _lapse(db: psycopg.Connection[Any], delivery_id: int) -> None:
    wait_until(
        lambda: db.execute(
            "SELECT lease_expires_at <= now() AS lapsed FROM message_delivery WHERE id = %s", (delivery_id,)
        ).fetchone()["lapsed"],
        timeout=10,
        message="lease lapsed",
    )


@pytest.fixture
def two_dispatchers(dsn: str, run_id: str) -> Iterator[tuple[Dispatcher, Dispatcher]]:
    a, b = Dispatcher(dsn, name=run_id + "-a", workers=1), Dispatcher(dsn, name=run_id + "-b", workers=1)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_late_record_after_the_lease_passed_on_changes_nothing(
    client: Client, db: psycopg.Connection[Any], two_dispatchers: tuple[Dispatcher, Dispatcher], run_id: str
) -> None:
    """A claims, its lease lapses, B claims the delivery again. A's late 200 must not mark
    delivered what B is still pushing; B's outcome (503, retried) is what stays."""
    a, b = two_dispatchers
    client.subscribe(
        run_id + "-late",
        "http",
        message_type=run_id + ".*",
        webhook_url="http://127.0.0.1:9/hook",
        retry_base_ms=60000,
        retry_max_ms=60000,
    )
    message_id = client.publish(run_id + ".x", {})
    [held_by_a] = _claim_only(a, db, run_id + "-late", 1)
    _lapse(db, held_by_a["delivery_id"])
    [held_by_b] = _claim_only(b, db, run_id + "-late", 60)
    assert held_by_b["webhook_id"] == held_by_a["webhook_id"]

    a.record([Finished(held_by_a, 200, None, 5.0, None, time.monotonic() + 30)])
    [row] = client.deliveries(message_id)
    assert (row["status"], row["claimed_by"]) == ("processing", b.name)
    assert client.attempts(row["id"]) == []  # nothing recorded for A's lost lease
    assert a.lost_leases == 1

    b.record([Finished(held_by_b, 503, "HTTP 503", 5.0, None, time.monotonic() + 30)])
    [row] = client.deliveries(message_id)
    assert (row["status"], row["push_status_code"]) == ("pending", 503)
    assert [x["status_code"] for x in client.attempts(row["id"])] == [503]
    # A's record, repeated now that B's lease is over, still changes nothing.
    a.record([Finished(held_by_a, 200, None, 5.0, None, time.monotonic() + 30)])
    assert client.deliveries(message_id)[0]["status"] == "pending"


def test_late_record_cannot_raise_a_dead_letter(
    client: Client, db: psycopg.Connection[Any], two_dispatchers: tuple[Dispatcher, Dispatcher], run_id: str
) -> None:
    """A claims the last allowed attempt, its lease lapses and the release job makes the
    delivery a dead letter: A's late 200 (single or in a batch) leaves it dead."""
    a, _ = two_dispatchers
    client.subscribe(
        run_id + "-dead",
        "http",
        message_type=run_id + ".*",
        webhook_url="http://127.0.0.1:9/hook",
        max_attempts=1,
    )
    first, second = client.publish(run_id + ".x", {"n": 1}), client.publish(run_id + ".x", {"n": 2})
    claimed = _claim_only(a, db, run_id + "-dead", 1)
    assert len(claimed) == 2
    for row in claimed:
        _lapse(db, row["delivery_id"])
    db.execute("SELECT pgmsg_release_expired_leases()")
    assert [r["status"] for m in (first, second) for r in client.deliveries(m)] == ["dead", "dead"]

    a.record([Finished(claimed[0], 200, None, 5.0, None, time.monotonic() + 30)])
    a.record([Finished(row, 200, None, 5.0, None, time.monotonic() + 30) for row in claimed])
    assert [r["status"] for m in (first, second) for r in client.deliveries(m)] == ["dead", "dead"]
    assert a.lost_leases == 3


def test_no_request_starts_after_its_lease_ran_out_waiting_for_a_slot(
    client: Client, keyed: Keyed, db: psycopg.Connection[Any], dsn: str, run_id: str
) -> None:
    """Two dispatchers, one request at a time each, a slow endpoint and more claimed than the
    lease lets one dispatcher send: deliveries whose lease ran out while they waited are not
    sent by the dispatcher that lost them, so no webhook-id is sent twice."""
    # A claims 50 (2 x per_subscription) and makes one 0.25 s request at a time: 12.5 s of
    # work under a 10 s lease. The timeout (3 s) is far above the answer's delay, so that
    # no request times out (and is retried, legitimately twice) on a busy machine.
    keyed.delay = 0.25
    client.subscribe(
        run_id + "-slow", "http", message_type=run_id + ".*", webhook_url=keyed.url, http_timeout_ms=3000
    )
    options = {"workers": 1, "per_subscription": 25, "lease_seconds": 10, "idle_poll_seconds": 0.1}
    with running(dsn, name=run_id + "-a", **options) as a:
        client.publish_many([(run_id + ".e", {"key": f"k{n}", "n": n}, "default") for n in range(60)])
        wait_until(lambda: a.inflight() > 0, message="dispatcher A claimed")
        with running(dsn, name=run_id + "-b", **options):
            wait_until(
                lambda: statuses(db, run_id + "-slow") == ["delivered"] * 60,
                timeout=90,
                message="every delivery delivered",
            )
    sent = [webhook_id for _, _, _, _, webhook_id, _ in keyed.seen]
    assert len(sent) == len(set(sent)) == 60, sorted(n for _, _, _, n, _, _ in keyed.seen)
    attempts = db.execute(
        "SELECT array_agg(attempts) AS a FROM message_delivery WHERE client_id = %s", (run_id + "-slow",)
    ).fetchone()["a"]
    assert attempts == [1] * 60  # a delivery given back unsent did not use up an attempt
    assert a.given_back > 0  # the scenario did make deliveries wait past their lease
