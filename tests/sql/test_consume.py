"""Async consumption: leases, ack, nack, dead letters, redrive, ordering, wake-up."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from pgmsg import Client, Delivery, InvalidInput, NotFound
from tests.support.waiting import wait_until


def statuses(db: psycopg.Connection[Any], client_id: str) -> Counter[str]:
    rows = db.execute("SELECT status FROM message_delivery WHERE client_id = %s", (client_id,)).fetchall()
    return Counter(r["status"] for r in rows)


def test_four_consumers_ten_thousand_deliveries_each_exactly_once(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    consumer = run_id + "-workers"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    ids: list[int] = []
    for chunk in range(10):
        ids += client.publish_many(
            [(run_id + ".job", {"n": chunk * 1000 + i}, "default") for i in range(1000)]
        )
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    def handle(delivery: Delivery) -> None:
        with lock:
            seen[delivery.message_id] += 1

    def work(name: str) -> None:
        while client.consume(consumer, handle, batch_size=100, consumer=name).delivered:
            pass

    threads = [threading.Thread(target=work, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(seen) == 10_000 and set(seen) == set(ids)  # none lost
    assert max(seen.values()) == 1  # none twice
    assert statuses(db, consumer) == Counter({"delivered": 10_000})


def test_claimed_payloads_come_back_exactly_as_published(client: Client, run_id: str) -> None:
    """Claims decode payloads with orjson, and with the standard library what orjson refuses:
    integers beyond 64 bits, numbers beyond a double; every value comes back unchanged."""
    consumer = run_id + "-exact"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    payloads = [
        {"order": 42, "amount": 129.95, "tags": ["a", "ü€😀"], "nested": {"none": None, "yes": True}},
        {"big": 2**70, "negative": -(2**64) - 1},
        [1, "two", 3.5e-300],
        "just text",
    ]
    ids = client.publish_many([(run_id + ".job", p, "default") for p in payloads])
    with client._connection() as conn:  # a number no double holds (orjson refuses it)
        ids.append(
            conn.execute(
                "INSERT INTO messages (message_type, payload) VALUES (%s, '{\"huge\": 1e400}') RETURNING id",
                (run_id + ".job",),
            ).fetchone()["id"]
        )
    claimed = client.claim(consumer, 10)
    assert [d.message_id for d in claimed] == ids
    assert [d.payload for d in claimed[:4]] == payloads
    assert claimed[4].payload == {"huge": 10**400}  # jsonb keeps it as 1 and 400 zeros: an exact integer
    assert all(
        d.client_id == consumer
        and d.delivery_mode == "async"
        and d.attempts == 1
        and d.lease_expires_at is not None
        for d in claimed
    )


def test_claimed_delivery_is_invisible_until_its_lease_lapses(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    """A consumer killed while holding a lease: another completes its work after the lease."""
    consumer = run_id + "-crashy"
    client.subscribe(consumer, "async", message_type=run_id + ".*", lease_seconds=1)
    client.publish_many([(run_id + ".job", {"n": i}, "default") for i in range(5)])

    claimed = client.claim(consumer, 10, consumer="doomed")
    assert len(claimed) == 5 and {d.attempts for d in claimed} == {1}
    assert client.claim(consumer, 10, consumer="other") == []  # the lease holds
    # "doomed" dies without ack or nack. After the lease, another consumer gets them.
    again = wait_until(lambda: client.claim(consumer, 10, consumer="survivor"))
    assert sorted(d.id for d in again) == sorted(d.id for d in claimed)
    assert {d.attempts for d in again} == {2}
    assert client.ack(d for d in again) == 5
    rows = db.execute(
        "SELECT claimed_by, retry_count, status FROM message_delivery WHERE client_id = %s", (consumer,)
    ).fetchall()
    assert {(r["claimed_by"], r["retry_count"], r["status"]) for r in rows} == {("survivor", 1, "delivered")}


def test_nack_with_delay_then_dead_letter_then_redrive(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    consumer = run_id + "-nack"
    client.subscribe(consumer, "async", message_type=run_id + ".*", max_attempts=2)
    client.publish(run_id + ".job", {"n": 1})

    [first] = client.claim(consumer)
    assert client.nack(first, delay_seconds=0.5, error="downstream busy") == "pending"
    assert client.claim(consumer) == []  # not before the delay
    [second] = wait_until(lambda: client.claim(consumer), timeout=10)
    assert second.id == first.id and second.attempts == 2
    assert client.nack(second, error="still broken") == "dead"  # max_attempts used up

    [dead] = client.dead_letters(consumer)
    assert dead["id"] == first.id and dead["last_error"] == "still broken" and dead["dead_at"] is not None
    assert client.claim(consumer) == []
    assert client.redrive(consumer) == 1
    [third] = client.claim(consumer)
    assert third.id == first.id and third.attempts == 1
    assert client.ack([third]) == 1
    assert statuses(db, consumer) == Counter({"delivered": 1})


def test_consume_nacks_failures_and_retries_them(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    consumer = run_id + "-flaky"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    client.publish(run_id + ".job", {"n": 1})

    def explode(delivery: Delivery) -> None:
        raise ValueError("downstream unavailable")

    result = client.consume(consumer, explode, retry_delay=lambda d: 0)
    assert result.delivered == [] and len(result.failed) == 1
    row = db.execute("SELECT * FROM message_delivery WHERE id = %s", (result.failed[0],)).fetchone()
    assert (row["status"], row["retry_count"], row["attempts"]) == ("pending", 1, 1)
    assert row["last_error"] == "ValueError: downstream unavailable"
    assert client.consume(consumer, lambda d: None).delivered == result.failed


def test_expired_lease_on_last_attempt_becomes_dead_letter(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    consumer = run_id + "-lastlease"
    client.subscribe(consumer, "async", message_type=run_id + ".*", max_attempts=1, lease_seconds=1)
    client.publish(run_id + ".job", {})
    [_claimed] = client.claim(consumer)
    wait_until(lambda: client.claim(consumer) == [] and statuses(db, consumer) == Counter({"dead": 1}))
    [dead] = client.dead_letters(consumer)
    assert "lease expired on attempt 1 of 1" in dead["last_error"]


def test_ordering_per_key_holds_back_only_that_key(client: Client, run_id: str) -> None:
    consumer = run_id + "-ordered"
    client.subscribe(consumer, "async", message_type=run_id + ".*", ordered=True)
    a1 = client.publish(run_id + ".e", {"seq": 1}, key="account-A")
    a2 = client.publish(run_id + ".e", {"seq": 2}, key="account-A")
    b1 = client.publish(run_id + ".e", {"seq": 1}, key="account-B")
    a3 = client.publish(run_id + ".e", {"seq": 3}, key="account-A")

    first = client.claim(consumer, 10)
    assert [d.message_id for d in first] == [a1, b1]  # one per key, in order
    failing = next(d for d in first if d.message_id == a1)
    client.ack([d for d in first if d.message_id == b1])
    client.nack(failing, error="boom")  # A's head fails: A waits, B went on
    retried = client.claim(consumer, 10)
    assert [d.message_id for d in retried] == [a1]
    client.ack([retried[0]])
    [second] = client.claim(consumer, 10)
    assert second.message_id == a2
    client.ack([second])
    assert [d.message_id for d in client.claim(consumer, 10)] == [a3]


def test_idle_consumer_is_woken_by_listen_not_polling(client: Client, run_id: str) -> None:
    consumer = run_id + "-idle"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    got = threading.Event()
    stop = threading.Event()
    received: list[int] = []

    def handle(delivery: Delivery) -> None:
        received.append(delivery.message_id)
        got.set()

    # A 60 s poll interval: only the NOTIFY wake-up can make it see work within the deadline.
    worker = threading.Thread(
        target=client.run_consumer, args=(consumer, handle), kwargs={"stop": stop, "idle_poll_seconds": 60}
    )
    worker.start()
    try:
        time.sleep(0.5)  # let it go idle on LISTEN (not synchronisation: the assertion below waits)
        message_id = client.publish(run_id + ".wake", {})
        assert got.wait(10), "idle consumer was not woken"
        assert received == [message_id]
    finally:
        stop.set()
        client.publish(run_id + ".wake", {})  # wakes it so it sees stop
        worker.join(timeout=20)


def test_durable_notify_listener_catches_up_after_downtime(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    consumer = run_id + "-dash"
    client.subscribe(consumer, "notify", message_type=run_id + ".*", durable=True)
    missed = client.publish(run_id + ".while.down", {"n": 1})  # nobody listening
    [row] = client.deliveries(missed)
    assert row["status"] == "pending" and row["notified_at"] is not None
    [caught_up] = client.claim(consumer)
    assert caught_up.message_id == missed and caught_up.delivery_mode == "notify"
    assert client.ack([caught_up]) == 1
    with client.listener(consumer) as listener:
        live = client.publish(run_id + ".while.up", {"n": 2})
        note = listener.next(timeout=10)
    assert note is not None and note.payload["id"] == live
    assert client.ack([(note.payload["delivery_id"], None)]) == 1  # received, not claimed: no lease
    assert statuses(db, consumer) == Counter({"delivered": 2})


def test_replay_from_message_id_and_window(client: Client, db: psycopg.Connection[Any], run_id: str) -> None:
    consumer = run_id + "-replay"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    ids = [client.publish(run_id + ".e", {"n": i}) for i in range(4)]
    assert len(client.consume(consumer, lambda d: None).delivered) == 4
    assert client.replay(consumer, from_message_id=ids[2]) == 2
    replayed = client.claim(consumer, 10)
    assert [d.message_id for d in replayed] == ids[2:]
    client.ack(d for d in replayed)
    created = db.execute("SELECT min(created_at) AS lo FROM messages WHERE id = ANY(%s)", (ids,)).fetchone()[
        "lo"
    ]
    assert client.replay(consumer, since=created) == 4
    assert len(client.claim(consumer, 10)) == 4
    with pytest.raises(InvalidInput, match="replay needs a starting message id or a start time"):
        client.replay(consumer)
    with pytest.raises(NotFound, match="has no active subscription"):
        client.replay(run_id + "-nobody", from_message_id=1)


def test_payload_filter_is_jsonb_containment(client: Client, run_id: str) -> None:
    consumer = run_id + "-de"
    client.subscribe(consumer, "async", message_type=run_id + ".*", payload_filter={"country": "DE"})
    hit = client.publish(run_id + ".order", {"country": "DE", "total": 5})
    client.publish(run_id + ".order", {"country": "FR", "total": 5})
    assert [d.message_id for d in client.claim(consumer, 10)] == [hit]
    with pytest.raises(InvalidInput, match="payload_filter must be a JSON object"):
        client.subscribe(run_id + "-bad", "async", payload_filter=["DE"])  # type: ignore[arg-type]


def test_claim_arguments_are_checked(client: Client) -> None:
    with pytest.raises(InvalidInput, match="batch_size must be at least 1"):
        client.consume("anyone", lambda d: None, batch_size=0)
    with pytest.raises(InvalidInput, match="lease of 0 seconds is out of range"):
        client.claim("anyone", 1, lease_seconds=0)
    with pytest.raises(NotFound, match="does not exist"):
        client.nack((-1, "00000000-0000-0000-0000-000000000000"))


@pytest.mark.parametrize("bad", [1.5, True, "7", None])
def test_ack_refuses_ids_that_are_not_integers_and_acks_nothing(
    client: Client, db: psycopg.Connection[Any], run_id: str, bad: object
) -> None:
    """A float must not be rounded to some other delivery's id; the good ids of the call stay claimed."""
    consumer = run_id + "-acker"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    client.publish_many([(run_id + ".job", {"n": i}, "default") for i in range(2)])
    claimed = client.claim(consumer, 2)
    with pytest.raises(InvalidInput, match=f"delivery ids are integers, not {bad!r}"):
        client.ack([claimed[0], (bad, claimed[1].lease_token)])  # type: ignore[list-item]
    assert statuses(db, consumer) == Counter({"processing": 2})
    assert client.ack(d for d in claimed) == 2
    assert statuses(db, consumer) == Counter({"delivered": 2})


def test_ordering_follows_the_fan_out_so_a_deferred_message_takes_its_place_when_it_moves(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    """The README's caveat, from the consumer's side: a deferred message has its id from the
    moment it is published but no delivery until the fan-out moves it, so a message of the same
    key published directly meanwhile (a higher id) is delivered first."""
    consumer = run_id + "-mixed"
    client.subscribe(consumer, "async", message_type=run_id + ".*", ordered=True)
    with db.transaction():
        # Hold the fan-out (the pg_cron job and any worker) while both are published.
        db.execute("SELECT pg_advisory_xact_lock(hashtext('pgmsg_fan_out_deferred'))")
        deferred = client.publish(run_id + ".e", {"seq": 1}, key="K", deferred=True)
        direct = client.publish(run_id + ".e", {"seq": 2}, key="K")
        assert deferred < direct
        [first] = client.claim(consumer, 10)
    assert first.message_id == direct  # not id order: fan-out order
    client.ack([first])
    client.fan_out_deferred()  # or the pg_cron job does, any moment
    [then] = wait_until(lambda: client.claim(consumer, 10), timeout=30, message="the deferred message moved")
    assert then.message_id == deferred
