"""Leases from the late consumer's side, and removed subscriptions from the client's side.

The README promises exactly-once per lease and ordering per key: a consumer whose lease lapsed and
passed on must not be able to ack, nack or replay away what the next holder works on. A removed
subscription must not leave a backlog that blocks the client or keeps health critical.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from pgmsg import Client, Delivery, LeaseLost
from pgmsg.cli.root import cli
from tests.support.waiting import wait_until

Conn = psycopg.Connection[dict[str, Any]]


def statuses(db: Conn, client_id: str) -> Counter[str]:
    rows = db.execute("SELECT status FROM message_delivery WHERE client_id = %s", (client_id,)).fetchall()
    return Counter(r["status"] for r in rows)


def lapsed(db: Conn, delivery_id: int) -> bool:
    row = db.execute(
        "SELECT lease_expires_at <= now() AS gone FROM message_delivery WHERE id = %s", (delivery_id,)
    ).fetchone()
    return bool(row and row["gone"])


def claim(db: Conn, client_id: str, lease: int, consumer: str) -> list[dict[str, Any]]:
    return db.execute("SELECT * FROM pgmsg_claim(%s, 10, %s, %s)", (client_id, consumer, lease)).fetchall()


def handed_over(client: Client, db: Conn, consumer: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A claims with a 1 s lease, the lease lapses, B claims the same delivery for 600 s.

    B polls as a consumer does: the housekeeping job that releases lapsed leases may hold the row
    at that very moment, and a claim skips a locked row (SKIP LOCKED) rather than wait for it."""
    [a] = claim(db, consumer, 1, "A")
    wait_until(lambda: lapsed(db, a["delivery_id"]), timeout=10, message="A's lease lapsed")
    [b] = wait_until(
        lambda: claim(db, consumer, 600, "B"),
        timeout=10,
        interval=0.2,
        message="B's claim of the lapsed delivery",
    )
    assert b["delivery_id"] == a["delivery_id"]
    return a, b


def test_a_late_nack_in_the_old_form_does_not_return_what_b_holds(
    client: Client, db: Conn, run_id: str
) -> None:
    """The issue's reproduction: A's late `pgmsg_nack(id, 0, ...)` returned `pending`, and C then
    claimed the delivery B still held. An ack or nack that names no lease cannot be applied now."""
    consumer = run_id + "-late-nack"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    client.publish(run_id + ".job", {"n": 1})
    a, b = handed_over(client, db, consumer)
    with pytest.raises(psycopg.Error):
        db.execute("SELECT pgmsg_nack(%s, 0, 'late') AS status", (a["delivery_id"],)).fetchone()
    assert claim(db, consumer, 600, "C") == []  # B still holds it
    row = db.execute(
        "SELECT status, claimed_by FROM message_delivery WHERE id = %s", (b["delivery_id"],)
    ).fetchone()
    assert row == {"status": "processing", "claimed_by": "B"}


def test_a_stale_token_is_refused_and_changes_nothing(client: Client, db: Conn, run_id: str) -> None:
    consumer = run_id + "-stale"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    client.publish(run_id + ".job", {"n": 1})
    a, b = handed_over(client, db, consumer)
    assert a["lease_token"] is not None and b["lease_token"] is not None
    assert a["lease_token"] != b["lease_token"]  # a lease handed on gets a new token
    before = db.execute("SELECT * FROM message_delivery WHERE id = %s", (a["delivery_id"],)).fetchone()
    with pytest.raises(psycopg.Error) as refused:
        db.execute("SELECT pgmsg_nack(%s, %s, 0, 'late')", (a["delivery_id"], a["lease_token"]))
    assert "not held under this lease" in str(refused.value)
    assert refused.value.diag.message_hint  # says what to do
    acked = db.execute(
        "SELECT * FROM pgmsg_ack(%s::bigint[], %s::uuid[])", ([a["delivery_id"]], [a["lease_token"]])
    ).fetchone()
    assert acked == {"acked": 0, "not_acked": [a["delivery_id"]]}
    after = db.execute("SELECT * FROM message_delivery WHERE id = %s", (a["delivery_id"],)).fetchone()
    assert after == before
    assert claim(db, consumer, 600, "C") == []
    # B, the holder, completes it.
    acked = db.execute(
        "SELECT * FROM pgmsg_ack(%s::bigint[], %s::uuid[])", ([b["delivery_id"]], [b["lease_token"]])
    ).fetchone()
    assert acked == {"acked": 1, "not_acked": []}
    assert statuses(db, consumer) == Counter({"delivered": 1})


def test_a_late_ack_does_not_release_the_next_message_of_an_ordered_key(
    client: Client, db: Conn, run_id: str
) -> None:
    consumer = run_id + "-ordered"
    client.subscribe(consumer, "async", message_type=run_id + ".*", ordered=True)
    m1 = client.publish(run_id + ".job", {"n": 1}, key="k")
    client.publish(run_id + ".job", {"n": 2}, key="k")
    a, b = handed_over(client, db, consumer)
    assert a["message_id"] == m1
    # A's late ack, without a token (the old form) or with its lapsed one: neither applies.
    with pytest.raises(psycopg.Error):
        db.execute("SELECT pgmsg_ack(%s::bigint[])", ([a["delivery_id"]],))
    db.execute("SELECT * FROM pgmsg_ack(%s::bigint[], %s::uuid[])", ([a["delivery_id"]], [a["lease_token"]]))
    assert claim(db, consumer, 600, "C") == []  # m2 waits while B works on m1
    db.execute("SELECT * FROM pgmsg_ack(%s::bigint[], %s::uuid[])", ([b["delivery_id"]], [b["lease_token"]]))
    [m2] = claim(db, consumer, 600, "C")
    assert m2["message_id"] != m1


def test_an_ack_may_not_name_one_delivery_with_another_deliverys_token(
    client: Client, db: Conn, run_id: str
) -> None:
    consumer = run_id + "-swap"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    client.publish_many([(run_id + ".job", {"n": i}, "default") for i in range(2)])
    # Two claims, two leases (the deliveries of one claim share its lease and token).
    [x] = db.execute("SELECT * FROM pgmsg_claim(%s, 1, 'A', 600)", (consumer,)).fetchall()
    [y] = db.execute("SELECT * FROM pgmsg_claim(%s, 1, 'B', 600)", (consumer,)).fetchall()
    assert x["lease_token"] != y["lease_token"]
    acked = db.execute(
        "SELECT * FROM pgmsg_ack(%s::bigint[], %s::uuid[])",
        ([x["delivery_id"], y["delivery_id"]], [y["lease_token"], x["lease_token"]]),
    ).fetchone()
    assert acked == {"acked": 0, "not_acked": sorted([x["delivery_id"], y["delivery_id"]])}
    with pytest.raises(psycopg.Error) as mismatched:
        db.execute("SELECT * FROM pgmsg_ack(%s::bigint[], %s::uuid[])", ([x["delivery_id"]], []))
    assert "lease token" in str(mismatched.value)
    assert statuses(db, consumer) == Counter({"processing": 2})


def test_expired_leases_released_by_the_job_lose_their_token(client: Client, db: Conn, run_id: str) -> None:
    consumer = run_id + "-released"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    client.publish(run_id + ".job", {"n": 1})
    [a] = claim(db, consumer, 1, "A")
    wait_until(lambda: lapsed(db, a["delivery_id"]), timeout=10, message="A's lease lapsed")
    db.execute("SELECT pgmsg_release_expired_leases()")
    row = db.execute(
        "SELECT status, lease_token FROM message_delivery WHERE id = %s", (a["delivery_id"],)
    ).fetchone()
    assert row == {"status": "pending", "lease_token": None}
    with pytest.raises(psycopg.Error):
        db.execute("SELECT pgmsg_nack(%s, %s, 0, 'late')", (a["delivery_id"], a["lease_token"]))
    [b] = claim(db, consumer, 600, "B")
    assert b["lease_token"] not in (None, a["lease_token"])


def test_replay_leaves_deliveries_in_flight_to_their_holder(client: Client, db: Conn, run_id: str) -> None:
    consumer = run_id + "-replay"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    first, _second = client.publish_many([(run_id + ".job", {"n": i}, "default") for i in range(2)])
    held, done = claim(db, consumer, 600, "A")
    db.execute(
        "SELECT * FROM pgmsg_ack(%s::bigint[], %s::uuid[])", ([done["delivery_id"]], [done["lease_token"]])
    )
    assert db.execute("SELECT pgmsg_replay(%s, %s) AS n", (consumer, first)).fetchone()["n"] == 1
    row = db.execute(
        "SELECT status, lease_token, claimed_by FROM message_delivery WHERE id = %s", (held["delivery_id"],)
    ).fetchone()
    assert row == {"status": "processing", "lease_token": held["lease_token"], "claimed_by": "A"}
    [again] = claim(db, consumer, 600, "B")  # only the finished one starts over
    assert again["delivery_id"] == done["delivery_id"]
    acked = db.execute(
        "SELECT * FROM pgmsg_ack(%s::bigint[], %s::uuid[])", ([held["delivery_id"]], [held["lease_token"]])
    ).fetchone()
    assert acked["acked"] == 1


def test_consume_reports_a_batch_whose_lease_ran_out(
    client: Client, db: Conn, run_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler slower than the lease: another consumer took the delivery meanwhile. consume does not
    ack it behind the new holder's back; it says so (warning, ConsumeResult.stale)."""
    consumer = run_id + "-slow"
    client.subscribe(consumer, "async", message_type=run_id + ".*", lease_seconds=1)
    client.publish(run_id + ".job", {"n": 1})
    taken: list[Delivery] = []

    def slow(delivery: Delivery) -> None:
        wait_until(lambda: lapsed(db, delivery.id), timeout=10, message="the lease lapsed")
        taken.extend(client.claim(consumer, 1, consumer="B", lease_seconds=600))

    with caplog.at_level(logging.WARNING, logger="pgmsg.client"):
        result = client.consume(consumer, slow)
    assert [d.id for d in taken] == result.stale and result.delivered == []
    assert "lease" in caplog.text and str(result.stale[0]) in caplog.text
    assert statuses(db, consumer) == Counter({"processing": 1})
    assert client.ack(taken) == 1


def test_client_ack_and_nack_need_the_lease(client: Client, db: Conn, run_id: str) -> None:
    consumer = run_id + "-pylease"
    client.subscribe(consumer, "async", message_type=run_id + ".*", lease_seconds=1)
    client.publish_many([(run_id + ".job", {"n": i}, "default") for i in range(2)])
    x, y = client.claim(consumer, 2)
    assert isinstance(x.lease_token, uuid.UUID)
    wait_until(lambda: lapsed(db, y.id), timeout=10, message="the leases lapsed")
    [x2, y2] = client.claim(consumer, 2, lease_seconds=600)
    with pytest.raises(LeaseLost) as lost:
        client.nack(x, error="late")
    assert str(x.id) in str(lost.value)
    acked = client.ack([x, (y.id, y.lease_token)])
    assert acked == 0 and acked.not_acked == (x.id, y.id)
    with pytest.raises(Exception, match="lease token"):
        client.ack([y.id])  # a bare id names no lease
    assert client.nack(x2, error="retry") == "pending"
    assert client.ack([(y2.id, str(y2.lease_token))]) == 1


# -- removed subscriptions ------------------------------------------------------------------------


def test_a_removed_subscriptions_backlog_neither_blocks_the_client_nor_stays_pending(
    client: Client, db: Conn, run_id: str
) -> None:
    consumer = run_id + "-removed"
    old = client.subscribe(consumer, "async", message_type=run_id + ".old")
    client.publish_many([(run_id + ".old", {"n": i}, "default") for i in range(1000)])
    [held] = claim(db, consumer, 600, "A")[:1]  # one of them in flight
    client.subscribe(consumer, "async", message_type=run_id + ".new")
    live = client.publish(run_id + ".new", {"n": "live"})
    db.execute("DELETE FROM subscriptions WHERE id = %s", (old.id,))
    [got] = db.execute("SELECT * FROM pgmsg_claim(%s, 1)", (consumer,)).fetchall()
    assert got["message_id"] == live
    assert statuses(db, consumer) == Counter({"cancelled": 1000, "processing": 1})
    cancelled = db.execute(
        "SELECT DISTINCT last_error, lease_token, lease_expires_at FROM message_delivery "
        "WHERE client_id = %s AND status = 'cancelled'",
        (consumer,),
    ).fetchall()
    assert len(cancelled) == 1 and f"subscription {old.id}" in cancelled[0]["last_error"]
    assert cancelled[0]["lease_token"] is None and cancelled[0]["lease_expires_at"] is None
    # The holder of a cancelled delivery learns it did not count.
    acked = db.execute(
        "SELECT * FROM pgmsg_ack(%s::bigint[], %s::uuid[])", ([held["delivery_id"]], [held["lease_token"]])
    ).fetchone()
    assert acked == {"acked": 0, "not_acked": [held["delivery_id"]]}
    # Health counts them finished: one delivery waits (the one just claimed), not 1,001.
    db.execute(
        "SELECT * FROM pgmsg_ack(%s::bigint[], %s::uuid[])", ([got["delivery_id"]], [got["lease_token"]])
    )
    out = CliRunner().invoke(cli, ["--dsn", client.conninfo, "health", "--client", consumer])
    assert "no pending or processing deliveries" in out.output, out.output


def test_a_delivery_left_pointing_at_a_removed_subscription_does_not_block_the_claim(
    client: Client, db: Conn, run_id: str
) -> None:
    """A publish in flight while its subscription is removed can commit a delivery that names it
    (no foreign key, 008). The claim passes over it to the client's live work."""
    consumer = run_id + "-orphan"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    gone = client.publish(run_id + ".job", {"n": 0})
    db.execute("UPDATE message_delivery SET subscription_id = -1 WHERE message_id = %s", (gone,))
    live = client.publish(run_id + ".job", {"n": 1})
    [got] = db.execute("SELECT * FROM pgmsg_claim(%s, 1)", (consumer,)).fetchall()
    assert got["message_id"] == live


def test_truncating_subscriptions_cancels_every_open_delivery(client: Client, dsn: str, run_id: str) -> None:
    consumer = run_id + "-truncated"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    client.publish_many([(run_id + ".job", {"n": i}, "default") for i in range(3)])
    with psycopg.connect(dsn, row_factory=dict_row) as conn:  # rolled back: others keep theirs
        conn.execute("TRUNCATE subscriptions CASCADE")
        assert statuses(conn, consumer) == Counter({"cancelled": 3})
        conn.rollback()


def test_a_publish_that_commits_while_its_subscription_is_removed_ends_cancelled(
    client: Client, db: Conn, dsn: str, run_id: str
) -> None:
    """The publish read the subscription before the DELETE committed, so the deletion trigger could
    not see its delivery. The 30-second job's command cancels it; health no longer counts it."""
    consumer = run_id + "-race"
    sub = client.subscribe(consumer, "async", message_type=run_id + ".*")
    with psycopg.connect(dsn, row_factory=dict_row) as publisher:  # a transaction still open
        [published] = publisher.execute(
            "INSERT INTO messages (message_type, payload) VALUES (%s, '{}') RETURNING id", (run_id + ".job",)
        ).fetchall()
        db.execute("DELETE FROM subscriptions WHERE id = %s", (sub.id,))  # commits first
        publisher.commit()
    delivery = "SELECT status, last_error, subscription_id FROM message_delivery WHERE message_id = %s"
    [before] = db.execute(delivery, (published["id"],)).fetchall()
    assert (before["status"], before["subscription_id"]) == ("pending", sub.id)  # the race happened

    db.execute("SELECT pgmsg_release_expired_leases()")  # what pg_cron runs every 30 s
    [after] = db.execute(delivery, (published["id"],)).fetchall()
    assert after["status"] == "cancelled"
    assert f"subscription {sub.id} of {consumer} was removed" in after["last_error"]
    out = CliRunner().invoke(cli, ["--dsn", client.conninfo, "health", "--client", consumer])
    assert "no pending or processing deliveries" in out.output, out.output
    # The sweep forgets the removal once no transaction that could still write for it runs.
    wait_until(
        lambda: db.execute(
            "SELECT pgmsg_release_expired_leases(), NOT EXISTS (SELECT 1 FROM "
            "pgmsg_removed_subscriptions WHERE subscription_id = %s) AS gone",
            (sub.id,),
        ).fetchone()["gone"],
        timeout=120,
        interval=0.5,
        message="the removal is forgotten",
    )


def test_a_tokenless_ack_completes_only_a_durable_notify_delivery_nobody_claimed(
    client: Client, db: Conn, run_id: str
) -> None:
    """NULL stands for "received by a listener, not claimed". Once a consumer claimed it (and
    its lease lapsed, or it was nacked for a later retry), only a claim's token completes it."""
    consumer = run_id + "-durable"
    client.subscribe(consumer, "notify", message_type=run_id + ".*", durable=True, lease_seconds=1)
    _lapsed_id, _nacked_id = client.publish_many([(run_id + ".job", {"n": i}, "default") for i in range(2)])
    [first, second] = client.claim(consumer, 2)
    client.nack(second, delay_seconds=600, error="later")  # waits for its retry
    wait_until(lambda: lapsed(db, first.id), timeout=10, message="the lease lapsed")
    db.execute("SELECT pgmsg_release_expired_leases()")  # pending again, token cleared
    assert statuses(db, consumer) == Counter({"pending": 2})
    acked = db.execute(
        "SELECT * FROM pgmsg_ack(%s::bigint[], %s::uuid[])", ([first.id, second.id], [None, None])
    ).fetchone()
    assert acked == {"acked": 0, "not_acked": sorted([first.id, second.id])}
    assert statuses(db, consumer) == Counter({"pending": 2})
    # A fresh one, received and not claimed, is still completed without a lease.
    fresh = client.publish(run_id + ".job", {"n": 2})
    [row] = client.deliveries(fresh)
    assert client.ack([(row["id"], None)]) == 1


@pytest.mark.parametrize("delay", ["NaN", "Infinity", "-Infinity", "1e300", str(10 * 365 * 86400)])
def test_a_nack_delay_that_is_not_a_sane_number_is_refused_with_a_hint(
    client: Client, db: Conn, run_id: str, delay: str
) -> None:
    consumer = run_id + "-delay"
    client.subscribe(consumer, "async", message_type=run_id + ".*")
    client.publish(run_id + ".job", {"n": 1})
    [held] = claim(db, consumer, 600, "A")
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        db.execute(
            "SELECT pgmsg_nack(%s, %s, %s::float8, 'x')", (held["delivery_id"], held["lease_token"], delay)
        )
    assert "nack delay" in str(refused.value) and refused.value.diag.message_hint
    assert statuses(db, consumer) == Counter({"processing": 1})  # still held, nothing changed
    assert (
        db.execute(
            "SELECT pgmsg_nack(%s, %s, 30, 'x')", (held["delivery_id"], held["lease_token"])
        ).fetchone()["pgmsg_nack"]
        == "pending"
    )
