"""The fan-out trigger: one delivery per matching active subscription."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from pgmsg import Client


def deliveries_by_client(db: psycopg.Connection[Any], message_id: int) -> dict[str, dict[str, Any]]:
    rows = db.execute("SELECT * FROM message_delivery WHERE message_id = %s", (message_id,)).fetchall()
    return {r["client_id"]: r for r in rows}


def test_seed_style_sql_works(db: psycopg.Connection[Any], run_id: str) -> None:
    """The seed's plain INSERTs, naming only its columns, subscribe and publish."""
    db.execute(
        "INSERT INTO subscriptions (client_id, message_type, namespace, delivery_mode) VALUES (%s, %s, '*', 'async')",
        (run_id + "-analytics", run_id + ".order.created"),
    )
    message = db.execute(
        "INSERT INTO messages (message_type, namespace, payload) VALUES (%s, 'orders', '{\"order_id\": 7}') RETURNING id",
        (run_id + ".order.created",),
    ).fetchone()
    delivery = deliveries_by_client(db, message["id"])[run_id + "-analytics"]
    assert delivery["status"] == "pending"
    assert delivery["delivery_mode"] == "async"
    assert delivery["retry_count"] == 0
    assert delivery["created_at"] is not None


@pytest.mark.parametrize(
    ("type_filter", "namespace_filter", "message_type", "namespace", "expected"),
    [
        ("{run}.order.*", "*", "{run}.order.created", "shop", True),
        ("{run}.order.*", "*", "{run}.user.created", "shop", False),
        ("*", "shop", "{run}.user.created", "shop", True),
        ("*", "shop", "{run}.user.created", "billing", False),
        ("{run}.*.created", "sh*", "{run}.user.created", "shop", True),
        ("{run}.order_created", "*", "{run}.orderXcreated", "shop", False),  # _ is literal, not LIKE's
    ],
)
def test_filters(
    client: Client,
    db: psycopg.Connection[Any],
    run_id: str,
    type_filter: str,
    namespace_filter: str,
    message_type: str,
    namespace: str,
    expected: bool,
) -> None:
    client.subscribe(
        run_id + "-f", "async", message_type=type_filter.format(run=run_id), namespace=namespace_filter
    )
    message_id = client.publish(message_type.format(run=run_id), {"k": 1}, namespace=namespace)
    assert (run_id + "-f" in deliveries_by_client(db, message_id)) is expected


def test_inactive_subscription_receives_nothing(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    sub = client.subscribe(run_id + "-paused", "async", message_type=run_id + ".*")
    db.execute("UPDATE subscriptions SET active = false WHERE id = %s", (sub.id,))
    message_id = client.publish(run_id + ".event", {})
    assert deliveries_by_client(db, message_id) == {}


def test_batch_publish_fans_out_every_message(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    client.subscribe(run_id + "-a", "async", message_type=run_id + ".*")
    client.subscribe(run_id + "-b", "async", message_type=run_id + ".*")
    ids = client.publish_many([(run_id + ".bulk", {"i": i}, "default") for i in range(50)])
    assert len(ids) == 50
    rows = db.execute(
        "SELECT client_id, count(*) AS n FROM message_delivery WHERE message_id = ANY(%s) GROUP BY client_id",
        (ids,),
    ).fetchall()
    assert {r["client_id"]: r["n"] for r in rows} == {run_id + "-a": 50, run_id + "-b": 50}


def test_large_notify_payload_is_sent_as_reference(client: Client, dsn: str, run_id: str) -> None:
    # Opted in to the payload in the notification, but this one is over PostgreSQL's
    # 8000-byte NOTIFY limit: sent without it, and the listener reads it by id.
    channel = run_id + "-big"
    client.subscribe(
        run_id + "-big", "notify", message_type=run_id + ".*", notify_channel=channel, notify_payload=True
    )
    blob = {"blob": "x" * 10_000}
    with psycopg.connect(dsn, autocommit=True) as plain, client.listener(channel) as listener:
        plain.execute(f'LISTEN "{channel}"')
        message_id = client.publish(run_id + ".big", blob)
        note = listener.next(timeout=10)
        [sent] = list(plain.notifies(timeout=10, stop_after=1))
    envelope = json.loads(sent.payload)
    assert envelope["id"] == message_id
    assert envelope["payload_omitted"] is True
    assert "payload" not in envelope
    assert note is not None and note.fetched
    assert note.payload["id"] == message_id and note.payload["payload"] == blob
