"""Async consumption: SKIP LOCKED claims, exactly once, nothing lost on failure."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from pgmsg import Client, Delivery, InvalidInput


def statuses(db: psycopg.Connection[Any], client_id: str) -> Counter[str]:
    rows = db.execute("SELECT status FROM message_delivery WHERE client_id = %s", (client_id,)).fetchall()
    return Counter(r["status"] for r in rows)


def test_concurrent_consumers_complete_each_delivery_exactly_once(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    consumer = run_id + "-workers"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    ids = client.publish_many([(run_id + ".job", {"n": i}, "default") for i in range(400)])
    seen: list[int] = []
    lock = threading.Lock()

    def handle(delivery: Delivery) -> None:
        with lock:
            seen.append(delivery.message_id)

    def work() -> None:
        while client.consume(consumer, handle, batch_size=10).delivered:
            pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(seen) == sorted(ids)  # every message, none twice
    assert statuses(db, consumer) == Counter({"delivered": 400})


def test_failing_handler_leaves_delivery_pending_with_error(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    consumer = run_id + "-flaky"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    client.publish(run_id + ".job", {"n": 1})

    def explode(delivery: Delivery) -> None:
        raise ValueError("downstream unavailable")

    result = client.consume(consumer, explode)
    assert result.delivered == [] and len(result.failed) == 1
    row = db.execute("SELECT * FROM message_delivery WHERE id = %s", (result.failed[0],)).fetchone()
    assert row["status"] == "pending"
    assert row["retry_count"] == 1
    assert row["last_error"] == "ValueError: downstream unavailable"

    again = client.consume(consumer, lambda d: None)
    assert again.delivered == result.failed
    assert statuses(db, consumer) == Counter({"delivered": 1})


def test_consumer_that_dies_mid_batch_loses_nothing(
    client: Client, dsn: str, db: psycopg.Connection[Any], run_id: str
) -> None:
    consumer = run_id + "-crashy"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    client.publish_many([(run_id + ".job", {"n": i}, "default") for i in range(5)])

    # A consumer claims the batch and its connection dies before committing.
    dying = psycopg.connect(dsn)
    claimed = dying.execute(
        "SELECT id FROM message_delivery WHERE client_id = %s AND status = 'pending' FOR UPDATE SKIP LOCKED",
        (consumer,),
    ).fetchall()
    assert len(claimed) == 5
    # While it holds them, nobody else gets them.
    assert client.consume(consumer, lambda d: None).delivered == []
    # Its backend is killed (a crash, not a polite close); wait until it is gone.
    pid = dying.info.backend_pid
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    while db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
        assert time.monotonic() < deadline, "terminated backend did not exit"
        time.sleep(0.02)
    dying.close()

    assert len(client.consume(consumer, lambda d: None, batch_size=10).delivered) == 5
    assert statuses(db, consumer) == Counter({"delivered": 5})


def test_batch_size_must_be_positive(client: Client) -> None:
    with pytest.raises(InvalidInput, match="batch_size must be at least 1"):
        client.consume("anyone", lambda d: None, batch_size=0)
