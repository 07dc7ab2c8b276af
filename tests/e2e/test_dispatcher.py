"""HTTP push after commit: the dispatcher, retries, signatures, isolation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgmsg import Client
from pgmsg.webhook_receiver import WebhookReceiver
from pgmsg.workers.dispatcher import Dispatcher
from pgmsg.workers.pushing import parse_retry_after
from tests.support.dispatching import running
from tests.support.receiver import Receiver, Reply
from tests.support.signatures import refused_by_both, verified_by_both
from tests.support.waiting import wait_until


@pytest.fixture
def dispatcher(dsn: str) -> Iterator[Dispatcher]:
    with running(dsn, name="test-dispatcher", workers=8, per_subscription=2, idle_poll_seconds=0.2) as d:
        yield d


def delivery(client: Client, message_id: int) -> dict[str, Any]:
    [row] = client.deliveries(message_id)
    return row


def test_fails_twice_then_succeeds_three_attempts_logged(
    client: Client, dispatcher: Dispatcher, receiver: Receiver, run_id: str
) -> None:
    receiver.script = [Reply(503), Reply(500), Reply(200)]
    client.subscribe(
        run_id + "-hook",
        "http",
        message_type=run_id + ".*",
        webhook_url=receiver.url,
        retry_base_ms=50,
        retry_max_ms=200,
    )
    message_id = client.publish(run_id + ".paid", {"amount": 3})
    row = wait_until(lambda: (r := delivery(client, message_id))["status"] == "delivered" and r)
    assert row["attempts"] == 3 and row["retry_count"] == 2 and row["push_status_code"] == 200
    attempts = client.attempts(row["id"])
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 503), (2, 500), (3, 200)]
    assert attempts[0]["error"].startswith("HTTP 503") and attempts[2]["error"] is None
    assert all(a["duration_ms"] is not None for a in attempts)
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1  # the same webhook-id on every retry, so receivers can deduplicate


def test_client_errors_fail_without_retry_and_410_deactivates(
    client: Client, dispatcher: Dispatcher, receiver: Receiver, run_id: str
) -> None:
    receiver.script = [Reply(404)]
    sub = client.subscribe(run_id + "-nf", "http", message_type=run_id + ".a", webhook_url=receiver.url)
    m1 = client.publish(run_id + ".a", {})
    row = wait_until(lambda: (r := delivery(client, m1))["status"] == "failed" and r)
    assert row["attempts"] == 1 and row["push_status_code"] == 404

    receiver.script = [Reply(410)]
    client.subscribe(run_id + "-gone", "http", message_type=run_id + ".b", webhook_url=receiver.url)
    m2 = client.publish(run_id + ".b", {})
    wait_until(lambda: delivery(client, m2)["status"] == "failed")
    [gone] = client.subscriptions(run_id + "-gone")
    assert gone.active is False and "410" in (gone.deactivated_reason or "")
    assert [s.active for s in client.subscriptions(run_id + "-nf")] == [sub.active] == [True]


def test_retry_after_is_honoured_and_attempts_end_in_dead_letter(
    client: Client, dispatcher: Dispatcher, receiver: Receiver, run_id: str
) -> None:
    receiver.script = [Reply(429, {"Retry-After": "1"}), Reply(503)]
    client.subscribe(
        run_id + "-rl",
        "http",
        message_type=run_id + ".*",
        webhook_url=receiver.url,
        max_attempts=2,
        retry_base_ms=10,
        retry_max_ms=20,
    )
    message_id = client.publish(run_id + ".x", {})
    row = wait_until(lambda: (r := delivery(client, message_id))["status"] == "dead" and r)
    assert row["attempts"] == 2 and row["dead_at"] is not None
    t1, t2 = (r.at for r in receiver.requests)
    assert t2 - t1 >= 0.9  # waited for Retry-After, not the 10-20 ms backoff
    assert client.redrive(run_id + "-rl") == 1
    wait_until(lambda: delivery(client, message_id)["status"] == "delivered")


def test_signed_requests_verify_and_survive_secret_rotation(
    client: Client, dispatcher: Dispatcher, run_id: str
) -> None:
    sub = client.subscribe(
        run_id + "-signed", "http", message_type=run_id + ".*", webhook_url="http://127.0.0.1:1/placeholder"
    )
    assert sub.signing_secret and sub.signing_secret.startswith("whsec_")
    old = sub.signing_secret
    with WebhookReceiver([old]) as receiver:
        client.subscribe(run_id + "-signed", "http", message_type=run_id + ".*", webhook_url=receiver.url)
        first = client.publish(run_id + ".one", {"n": 1})
        wait_until(lambda: delivery(client, first)["status"] == "delivered")
        assert [a["body"]["id"] for a in receiver.accepted] == [first]

        new = client.rotate_secret(sub.id, overlap_seconds=3600)
        second = client.publish(run_id + ".two", {"n": 2})  # signed with new and old
        wait_until(lambda: delivery(client, second)["status"] == "delivered")
        assert receiver.rejected == []
    with WebhookReceiver([new]) as only_new:
        client.subscribe(run_id + "-signed", "http", message_type=run_id + ".*", webhook_url=only_new.url)
        third = client.publish(run_id + ".three", {"n": 3})
        wait_until(lambda: delivery(client, third)["status"] == "delivered")
        assert [a["body"]["id"] for a in only_new.accepted] == [third]
    with WebhookReceiver(["whsec_" + "A" * 43 + "="]) as stranger:
        client.subscribe(run_id + "-signed", "http", message_type=run_id + ".*", webhook_url=stranger.url)
        fourth = client.publish(run_id + ".four", {"n": 4})
        row = wait_until(lambda: (r := delivery(client, fourth))["push_status_code"] == 401 and r)
        assert row["status"] == "failed" and stranger.accepted == []


def test_publish_does_not_wait_for_a_hanging_endpoint(
    client: Client, dispatcher: Dispatcher, receiver: Receiver, run_id: str
) -> None:
    """Compare publish time with a subscriber whose endpoint hangs and with none."""

    def publish_batch(mtype: str) -> float:
        started = time.perf_counter()
        for i in range(30):
            client.publish(mtype, {"i": i})
        return time.perf_counter() - started

    publish_batch(run_id + ".warmup")
    without = publish_batch(run_id + ".none")
    receiver.script = [Reply(delay=5)] * 100  # every request hangs 5 s (timeout 2 s)
    client.subscribe(
        run_id + "-slow",
        "http",
        message_type=run_id + ".slow",
        webhook_url=receiver.url,
        http_timeout_ms=2000,
    )
    with_hanging = publish_batch(run_id + ".slow")
    # Blocking on the endpoint would cost >= 2 s per message (60 s in all).
    assert with_hanging < 3 * without + 1.0, (with_hanging, without)


def test_a_slow_endpoint_does_not_delay_others(
    client: Client, dispatcher: Dispatcher, receiver: Receiver, run_id: str
) -> None:
    receiver.script = [Reply(delay=3)] * 20
    client.subscribe(
        run_id + "-slow", "http", message_type=run_id + ".*", webhook_url=receiver.url, http_timeout_ms=10000
    )
    fast = receiver.another()
    client.subscribe(run_id + "-fast", "http", message_type=run_id + ".*", webhook_url=fast.url)
    ids = [client.publish(run_id + ".e", {"n": i}) for i in range(6)]
    # 6 deliveries to the slow endpoint (2 in flight at a time, 3 s each) take >= 9 s;
    # the fast endpoint gets all 6 long before the slow one has finished.
    assert len(fast.wait_for(6, timeout=8)) == 6
    slow_done = [
        r
        for i in ids
        for r in client.deliveries(i)
        if r["client_id"] == run_id + "-slow" and r["status"] == "delivered"
    ]
    assert len(slow_done) < 6


def test_target_removed_from_allowlist_is_refused_at_send_time(dsn: str, db: psycopg.Connection[Any]) -> None:
    """The operator narrows the allowlist after a subscription was written: the
    dispatcher refuses the request itself (checked on a row as pgmsg_claim_http_slots returns it)."""
    before = [r["entry"] for r in db.execute("SELECT entry FROM pgmsg_webhook_allowlist").fetchall()]
    probe = Dispatcher(dsn, name="allowlist-probe", workers=1)
    try:
        db.execute("SELECT pgmsg_set_webhook_allowlist(%s)", (["10.0.0.0/8"],))
        row = {
            "delivery_id": 0,
            "subscription_id": 0,
            "client_id": "probe",
            "webhook_id": "dlv_0",
            "webhook_url": "http://127.0.0.1:9/hook",
            "http_timeout_ms": 1000,
            "attempts": 1,
            "message_id": 0,
            "message_type": "probe",
            "body": "{}",
            "headers": [["Content-Type", "application/json"]],
        }
        code, error, _, _ = probe.push(row)
        assert code is None
        assert error == "refused: webhook target 127.0.0.1 refused: not in the allowlist (10.0.0.0/8)"
    finally:
        db.execute("SELECT pgmsg_set_webhook_allowlist(%s)", (before,))
        probe.close()


def test_heartbeat_is_recorded(dispatcher: Dispatcher, db: psycopg.Connection[Any]) -> None:
    row = wait_until(
        lambda: db.execute("SELECT * FROM pgmsg_dispatchers WHERE name = 'test-dispatcher'").fetchone()
    )
    assert row["last_seen"] is not None


@pytest.mark.parametrize(
    ("header", "expected"), [("7", 7.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)]
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_dispatcher_works_with_its_least_privilege_role(
    client: Client, dsn: str, inventory_vars: dict[str, Any], run_id: str, receiver: Receiver
) -> None:
    role = inventory_vars["messaging_schema_dispatchers"][0]
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params.update(user=role["name"], password=role["password"])
    limited = Dispatcher(psycopg.conninfo.make_conninfo(**params), name=run_id + "-limited", workers=2)
    try:
        sub = client.subscribe(run_id + "-lp", "http", message_type=run_id + ".*", webhook_url=receiver.url)
        message_id = client.publish(run_id + ".x", {"n": 1})
        wait_until(
            lambda: limited.dispatch_once() >= 0 and delivery(client, message_id)["status"] == "delivered"
        )
        limited.heartbeat()
        assert receiver.requests[0].json["id"] == message_id
        [request] = receiver.requests
        assert sub.signing_secret is not None
        webhook_id = verified_by_both([sub.signing_secret], request.headers, request.body)
        assert webhook_id == f"dlv_{delivery(client, message_id)['id']}"
        refused_by_both([sub.signing_secret], request.headers, request.body + b" ")
    finally:
        limited.close()
