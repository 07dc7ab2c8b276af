"""One message, three subscribers: async, HTTP push and NOTIFY, end to end.

HTTP subscriptions here use push_mode in_transaction, the seed's synchronous
push; tests/e2e/test_dispatcher.py covers the default, after-commit push.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgmsg import Client, Delivery
from tests.support.receiver import Receiver


def test_one_message_reaches_all_three_modes(
    client: Client, db: psycopg.Connection[Any], receiver: Receiver, run_id: str
) -> None:
    mtype = run_id + ".order.created"
    client.subscribe(run_id + "-analytics", "async", message_type=mtype)
    client.subscribe(
        run_id + "-webhook", "http", message_type=mtype, webhook_url=receiver.url, push_mode="in_transaction"
    )
    client.subscribe(run_id + "-dashboard", "notify", message_type=mtype, notify_channel=run_id + "-dash")
    payload = {"order_id": 1001, "total": "19.99", "customer": "Zoë"}

    with client.listener(run_id + "-dash") as listener:
        message_id = client.publish(mtype, payload, namespace="shop")
        note = listener.next(timeout=10)

    # NOTIFY: the listener got the envelope with the payload.
    assert note is not None
    assert note.payload["id"] == message_id
    assert note.payload["type"] == mtype
    assert note.payload["namespace"] == "shop"
    assert note.payload["payload"] == payload

    # HTTP: the receiver got the POST with the payload; the delivery shows 200.
    [request] = receiver.wait_for(1)
    assert request.path == "/webhook"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["pgmsg-message-id"] == str(message_id)
    assert request.json["payload"] == payload
    assert request.json["id"] == message_id

    # Async: the consumer claims and completes it.
    handled: list[Delivery] = []
    result = client.consume(run_id + "-analytics", handled.append)
    assert [d.message_id for d in handled] == [message_id]
    assert handled[0].payload == payload
    assert len(result.delivered) == 1

    rows = {r["client_id"]: r for r in client.deliveries(message_id)}
    assert rows[run_id + "-webhook"]["status"] == "delivered"
    assert rows[run_id + "-webhook"]["push_status_code"] == 200
    assert rows[run_id + "-webhook"]["delivered_at"] is not None
    assert rows[run_id + "-analytics"]["status"] == "delivered"
    assert rows[run_id + "-analytics"]["delivered_at"] is not None
    assert rows[run_id + "-dashboard"]["status"] == "notified"


def test_receiver_down_then_back_is_delivered_by_retry(
    client: Client, db: psycopg.Connection[Any], receiver: Receiver, run_id: str
) -> None:
    mtype = run_id + ".payment.settled"
    client.subscribe(
        run_id + "-hook", "http", message_type=mtype, webhook_url=receiver.url, push_mode="in_transaction"
    )
    receiver.stop()  # nothing listens on the port now

    message_id = client.publish(mtype, {"payment": 5})
    [failed] = client.deliveries(message_id)
    assert failed["status"] == "failed"
    assert "Failed to connect" in failed["last_error"] or "Connection refused" in failed["last_error"]
    assert failed["push_status_code"] is None
    [attempt] = client.attempts(failed["id"])
    assert attempt["error"] == failed["last_error"]

    receiver.start()  # same port
    outcome = client.retry_failed_http_push(run_id + "-hook")
    assert [(o["delivery_id"], o["status"], o["push_status_code"]) for o in outcome] == [
        (failed["id"], "delivered", 200)
    ]
    assert receiver.wait_for(1)[0].json["payload"] == {"payment": 5}
    [delivered] = client.deliveries(message_id)
    assert delivered["status"] == "delivered"
    assert delivered["retry_count"] == 1
    assert delivered["last_error"] is None
    assert [a["status_code"] for a in client.attempts(failed["id"])] == [None, 200]
    assert delivered["attempts"] == 2


def test_non_2xx_answer_is_a_failure_with_the_status_recorded(
    client: Client, receiver: Receiver, run_id: str
) -> None:
    receiver.status = 503
    mtype = run_id + ".x"
    client.subscribe(
        run_id + "-busy", "http", message_type=mtype, webhook_url=receiver.url, push_mode="in_transaction"
    )
    message_id = client.publish(mtype, {})
    [row] = client.deliveries(message_id)
    assert row["status"] == "failed"
    assert row["push_status_code"] == 503
    assert row["last_error"].startswith("HTTP 503")


def test_seed_retry_signature_retries_one_message(
    client: Client, db: psycopg.Connection[Any], receiver: Receiver, run_id: str
) -> None:
    mtype = run_id + ".y"
    client.subscribe(
        run_id + "-seed", "http", message_type=mtype, webhook_url=receiver.url, push_mode="in_transaction"
    )
    receiver.status = 500
    message_id = client.publish(mtype, {"n": 1})
    receiver.status = 200
    ok = db.execute("SELECT retry_failed_http_push(%s, %s) AS ok", (message_id, run_id + "-seed")).fetchone()
    assert ok["ok"] is True
    with pytest.raises(psycopg.errors.NoDataFound, match="no http delivery of message"):
        db.execute("SELECT retry_failed_http_push(%s, %s)", (message_id, run_id + "-nobody"))
