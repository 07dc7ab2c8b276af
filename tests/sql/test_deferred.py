"""Deferred fan-out: message_inbox, pgmsg_fan_out_deferred and what a deferred publish keeps.

The deployed pgmsg-fan-out service and the pg_cron job move deferred messages
within milliseconds, so every test here first takes the advisory lock they
take (fan_out_paused) and moves messages itself, on that lock's session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgmsg import Client
from pgmsg.errors import InvalidInput
from tests.sql.test_security import login  # noqa: F401  (fixture)

LOCK = "SELECT pg_advisory_lock(hashtext('pgmsg_fan_out_deferred'))"


@pytest.fixture
def paused(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A session holding the fan-out lock: no worker moves anything until the test ends."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(LOCK)
        yield conn


def move(conn: psycopg.Connection[Any], limit: int = 1000) -> int:
    return conn.execute("SELECT pgmsg_fan_out_deferred(%s) AS n", (limit,)).fetchone()["n"]


def inbox(conn: psycopg.Connection[Any], ids: list[int]) -> dict[int, dict[str, Any]]:
    rows = conn.execute("SELECT * FROM message_inbox WHERE id = ANY (%s)", (ids,)).fetchall()
    return {r["id"]: r for r in rows}


def clashing(client: Client, paused: psycopg.Connection[Any], run_id: str) -> int:
    """A deferred message whose move must fail: its id is one messages already has (only a
    role that may write ids can make one). Returns that id."""
    taken = client.publish(run_id + ".taken", {})
    paused.execute("INSERT INTO message_inbox (id, message_type) VALUES (%s, %s)", (taken, run_id + ".clash"))
    return taken


def test_a_deferred_message_is_fanned_out_when_moved_with_its_id(
    client: Client, paused: psycopg.Connection[Any], run_id: str
) -> None:
    client.subscribe(run_id + "-a", "async", message_type=run_id + ".*")
    client.subscribe(run_id + "-b", "async", message_type=run_id + ".*")
    message_id = client.publish(run_id + ".order", {"n": 1}, "shop", key="k-1", deferred=True)
    waiting = inbox(paused, [message_id])[message_id]
    assert (waiting["message_type"], waiting["namespace"], waiting["payload"], waiting["message_key"]) == (
        run_id + ".order",
        "shop",
        {"n": 1},
        "k-1",
    )
    assert (
        paused.execute("SELECT count(*) AS n FROM messages WHERE id = %s", (message_id,)).fetchone()["n"] == 0
    )
    assert (
        paused.execute(
            "SELECT count(*) AS n FROM message_delivery WHERE message_id = %s", (message_id,)
        ).fetchone()["n"]
        == 0
    )

    assert move(paused) >= 1
    assert inbox(paused, [message_id]) == {}
    moved = paused.execute("SELECT * FROM messages WHERE id = %s", (message_id,)).fetchone()
    assert (
        moved["message_type"],
        moved["namespace"],
        moved["payload"],
        moved["message_key"],
        moved["created_at"],
    ) == (run_id + ".order", "shop", {"n": 1}, "k-1", waiting["created_at"])
    clients = paused.execute(
        "SELECT client_id FROM message_delivery WHERE message_id = %s ORDER BY client_id", (message_id,)
    ).fetchall()
    assert [c["client_id"] for c in clients] == [run_id + "-a", run_id + "-b"]
    [delivery] = client.claim(run_id + "-a", 10)
    assert (delivery.message_id, delivery.payload) == (message_id, {"n": 1})


def test_deferred_ids_come_from_the_messages_sequence(
    client: Client, paused: psycopg.Connection[Any], run_id: str
) -> None:
    before = client.publish(run_id + ".seq", {})
    deferred = client.publish(run_id + ".seq", {}, deferred=True)
    after = client.publish(run_id + ".seq", {})
    assert before < deferred < after


def test_invalid_deferred_messages_are_refused_at_publish_with_the_same_errors(
    client: Client, paused: psycopg.Connection[Any], run_id: str
) -> None:
    for deferred in (False, True):
        with pytest.raises(InvalidInput, match="invalid message_type '-bad'.*use 1-255 characters"):
            client.publish("-bad", {}, deferred=deferred)
        with pytest.raises(InvalidInput, match="invalid namespace"):
            client.publish(run_id + ".x", {}, "no spaces", deferred=deferred)
    with pytest.raises(psycopg.errors.CheckViolation, match="payload must be a JSON value") as info:
        paused.execute(
            "INSERT INTO message_inbox (message_type, payload) VALUES (%s, NULL)", (run_id + ".x",)
        )
    assert info.value.diag.message_hint == "send '{}' for a message without data"
    with pytest.raises(psycopg.errors.CheckViolation, match="message_type is required"):
        paused.execute("INSERT INTO message_inbox (message_type) VALUES ('  ')")
    for table in ("message_inbox", "messages"):
        with pytest.raises(psycopg.errors.CheckViolation, match="invalid message key") as info:
            paused.execute(
                f"INSERT INTO {table} (message_type, message_key) VALUES (%s, '')", (run_id + ".x",)
            )
        assert info.value.diag.message_hint == "give the ordering key 1-255 characters, or no key"
    assert (
        paused.execute(
            "SELECT count(*) AS n FROM message_inbox WHERE message_type LIKE %s", (run_id + "%",)
        ).fetchone()["n"]
        == 0
    )


def test_a_rolled_back_deferred_publish_leaves_nothing(
    dsn: str, paused: psycopg.Connection[Any], run_id: str
) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO message_inbox (message_type) VALUES (%s)", (run_id + ".rolled",))
        conn.rollback()
    move(paused)
    for table in ("message_inbox", "messages"):
        assert (
            paused.execute(
                f"SELECT count(*) AS n FROM {table} WHERE message_type = %s", (run_id + ".rolled",)
            ).fetchone()["n"]
            == 0
        )


def test_messages_move_oldest_first_in_batches_and_keep_their_order(
    client: Client, paused: psycopg.Connection[Any], run_id: str
) -> None:
    client.subscribe(run_id + "-ordered", "async", message_type=run_id + ".*", ordered=True)
    move(paused, 100000)  # whatever other tests left waiting
    ids = client.publish_many([(run_id + ".step", {"i": i}, "default") for i in range(5)], deferred=True)
    assert ids == sorted(ids)
    assert move(paused, 2) == 2
    assert sorted(inbox(paused, ids)) == ids[2:]
    assert move(paused, 1000) == 3
    delivered = []
    while claimed := client.claim(run_id + "-ordered", 10):
        delivered += [d.payload["i"] for d in claimed]
        client.ack([d for d in claimed])
    assert delivered == [0, 1, 2, 3, 4]


def test_a_message_that_cannot_move_is_set_aside_with_its_error_and_the_rest_move(
    client: Client, paused: psycopg.Connection[Any], run_id: str
) -> None:
    client.subscribe(run_id + "-s", "async", message_type=run_id + ".*")
    first = client.publish(run_id + ".ok", {"i": 1}, deferred=True)
    taken = clashing(client, paused, run_id)
    last = client.publish(run_id + ".ok", {"i": 2}, deferred=True)
    move(paused)
    assert inbox(paused, [first, last]) == {}
    assert (
        paused.execute(
            "SELECT count(*) AS n FROM message_delivery WHERE message_id = ANY (%s)", ([first, last],)
        ).fetchone()["n"]
        == 2
    )
    failed = inbox(paused, [taken])[taken]
    assert "duplicate key value violates unique constraint" in failed["error"]
    assert "SQLSTATE 23505" in failed["error"] and failed["failed_at"] is not None
    assert taken in [f["id"] for f in client.deferred_failures()]
    status = client.deferred_status()
    assert status["failed"] >= 1

    move(paused)  # set aside: not tried again until retried
    assert inbox(paused, [taken])[taken]["failed_at"] == failed["failed_at"]
    paused.execute("DELETE FROM messages WHERE id = %s", (taken,))  # what was in the way
    assert client.retry_deferred([taken]) == 1
    assert client.retry_deferred([taken]) == 0
    assert move(paused) >= 1
    assert paused.execute("SELECT message_type FROM messages WHERE id = %s", (taken,)).fetchone() == {
        "message_type": run_id + ".clash"
    }


def test_a_transient_error_is_raised_and_the_message_stays_waiting(
    dsn: str, client: Client, paused: psycopg.Connection[Any], run_id: str
) -> None:
    """A lock timeout says nothing about the message: the call fails, nothing is set aside."""
    move(paused, 100000)
    message_id = client.publish(run_id + ".blocked", {}, deferred=True)
    with psycopg.connect(dsn) as blocker:
        blocker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        paused.execute("SET lock_timeout = '200ms'")
        try:
            with pytest.raises(psycopg.errors.LockNotAvailable):
                move(paused)
        finally:
            paused.execute("RESET lock_timeout")
        blocker.rollback()
    waiting = inbox(paused, [message_id])[message_id]
    assert waiting["error"] is None and waiting["failed_at"] is None
    assert move(paused) == 1
    assert inbox(paused, [message_id]) == {}


def test_one_worker_moves_at_a_time(
    dsn: str, client: Client, paused: psycopg.Connection[Any], run_id: str
) -> None:
    message_id = client.publish(run_id + ".locked", {}, deferred=True)
    with psycopg.connect(dsn, autocommit=True) as other:
        assert other.execute("SELECT pgmsg_fan_out_deferred(1000)").fetchone()[0] == 0
    assert message_id in inbox(paused, [message_id])
    assert client.fan_out_deferred() == 0  # the Client's session is another one too
    assert move(paused) >= 1


@pytest.mark.parametrize("limit", [0, -1, 100001])
def test_the_batch_size_is_checked(paused: psycopg.Connection[Any], limit: int) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="invalid fan-out batch size") as info:
        move(paused, limit)
    assert info.value.diag.message_hint == "move 1-100000 messages per call"


def test_status_counts_waiting_and_failed(
    client: Client, paused: psycopg.Connection[Any], run_id: str
) -> None:
    move(paused, 100000)
    empty = client.deferred_status()
    assert empty["waiting"] == 0 and empty["oldest_waiting"] is None
    client.publish(run_id + ".w", {}, deferred=True)
    client.publish(run_id + ".w", {}, deferred=True)
    state = client.deferred_status()
    assert state["waiting"] == 2 and state["oldest_waiting"] is not None


def test_publisher_may_publish_deferred_but_not_read_or_move(  # type: ignore[no-untyped-def]
    login, paused: psycopg.Connection[Any], run_id: str
) -> None:
    publisher = login("pgmsg_publisher_local")
    row = publisher.execute(
        "INSERT INTO message_inbox (message_type, payload) VALUES (%s, '{\"a\": 1}') "
        "RETURNING id, created_at",
        (run_id + ".pub",),
    ).fetchone()
    assert row["id"] > 0
    for query in (
        "SELECT payload FROM message_inbox",
        "SELECT pgmsg_fan_out_deferred(10)",
        "SELECT pgmsg_retry_deferred(NULL)",
        "DELETE FROM message_inbox",
        "UPDATE message_inbox SET error = 'x'",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            publisher.execute(query)
    for column, value in (("error", "'x'"), ("id", "1"), ("created_at", "now()")):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            publisher.execute(
                f"INSERT INTO message_inbox (message_type, {column}) VALUES (%s, {value})", (run_id + ".e",)
            )
    dispatcher = login("pgmsg_dispatcher_local")
    assert dispatcher.execute("SELECT pgmsg_fan_out_deferred(10) AS n").fetchone()["n"] == 0  # paused
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        dispatcher.execute("SELECT payload FROM message_inbox")
    assert move(paused) >= 1
    assert paused.execute("SELECT payload FROM messages WHERE id = %s", (row["id"],)).fetchone() == {
        "payload": {"a": 1}
    }
