"""Retention keeps up: one pass of every pg_cron job retires a day's backlog, with history
(housekeeping_keep_history: true) or without (false), each trim removes what is past its age and
nothing else, and archiving never takes away a delivery that another transaction is sending
round again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgmsg import Client
from tests.support.devdb import housekeeping_jobs
from tests.support.waiting import wait_until

BACKLOG = 60_000


def run_every_job_once(dsn: str) -> None:
    """What pg_cron does at each job's time: the job's command, alone, on its own connection
    (autocommit, as pg_cron sends it), so a procedure may commit between its batches."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        commands = [
            r["command"]
            for r in conn.execute("SELECT command FROM cron.job WHERE jobname LIKE 'pgmsg-%' ORDER BY jobid")
        ]
        assert len(commands) >= 5
        for command in commands:
            conn.execute(command)


@pytest.fixture(params=[True, False], ids=["keep-history", "no-history"])
def keep_history(request: pytest.FixtureRequest, db: psycopg.Connection[Any]) -> Iterator[bool]:
    """The retirement job as the role schedules it for housekeeping_keep_history (the database
    keeps the default's); the default's job comes back afterwards."""
    prefix, jobs = housekeeping_jobs({})
    [(name, schedule, default)] = [j for j in jobs if j[0] == "archive-messages"]
    [(_, _, command)] = [
        j for j in housekeeping_jobs({"housekeeping_keep_history": request.param})[1] if j[0] == name
    ]
    db.execute("SELECT pgmsg_ensure_cron_job(%s, %s, %s)", (prefix + name, schedule, command))
    try:
        yield request.param
    finally:
        db.execute("SELECT pgmsg_ensure_cron_job(%s, %s, %s)", (prefix + name, schedule, default))


@pytest.fixture
def history_cleanup(db: psycopg.Connection[Any], run_id: str) -> Iterator[None]:
    yield
    db.execute(
        "DELETE FROM delivery_attempts_history WHERE delivery_id IN "
        "(SELECT id FROM message_delivery_history WHERE client_id LIKE %s)",
        (run_id + "%",),
    )
    db.execute("DELETE FROM message_delivery_history WHERE client_id LIKE %s", (run_id + "%",))
    db.execute("DELETE FROM messages_history WHERE message_type LIKE %s", (run_id + "%",))


def test_one_pass_of_every_job_retires_a_backlog_of_60000_messages(
    client: Client,
    db: psycopg.Connection[Any],
    dsn: str,
    run_id: str,
    history_cleanup: None,
    keep_history: bool,
) -> None:
    client.subscribe(run_id + "-bulk", "async", message_type=run_id + ".*")
    # 60,000 messages past retention, each with a delivered delivery (the fan-out trigger
    # writes the deliveries; the superuser sets them delivered long ago).
    db.execute(
        "INSERT INTO messages (message_type, payload, created_at) "
        "SELECT %s, jsonb_build_object('n', n), now() - interval '400 days' "
        "FROM generate_series(1, %s) n",
        (run_id + ".old", BACKLOG),
    )
    db.execute(
        "UPDATE message_delivery SET status = 'delivered', delivered_at = now() - interval '399 days' "
        "WHERE client_id = %s",
        (run_id + "-bulk",),
    )

    run_every_job_once(dsn)

    [left] = db.execute("SELECT count(*) AS n FROM messages WHERE message_type = %s", (run_id + ".old",))
    assert left["n"] == 0
    [gone] = db.execute(
        "SELECT count(*) AS n FROM message_delivery WHERE client_id = %s", (run_id + "-bulk",)
    )
    assert gone["n"] == 0
    [kept] = db.execute(
        "SELECT count(*) AS n FROM messages_history WHERE message_type = %s", (run_id + ".old",)
    )
    assert kept["n"] == (BACKLOG if keep_history else 0)


@pytest.mark.parametrize("keep_history", [False], indirect=True, ids=["no-history"])
def test_without_history_old_messages_go_with_deliveries_and_attempts_and_nothing_is_copied(
    client: Client,
    db: psycopg.Connection[Any],
    dsn: str,
    run_id: str,
    history_cleanup: None,
    keep_history: bool,
) -> None:
    """housekeeping_keep_history: false. A message past retention whose deliveries are finished
    goes with its deliveries and their attempts, and no history table receives any of them; a
    message with an open delivery, and a recent one, stay whole."""
    client.subscribe(run_id + "-a", "async", message_type=run_id + ".*")
    client.subscribe(run_id + "-b", "async", message_type=run_id + ".*")
    done, waiting, recent = (client.publish(run_id + ".e", {"n": n}) for n in range(3))
    db.execute(
        "UPDATE messages SET created_at = now() - interval '400 days' WHERE id = ANY(%s)", ([done, waiting],)
    )
    # Finished: delivered (lately, so the purge job leaves it to this one) and dead.
    db.execute(
        "UPDATE message_delivery SET status = CASE client_id WHEN %s THEN 'delivered' ELSE 'dead' END, "
        "delivered_at = now() WHERE message_id = %s",
        (run_id + "-a", done),
    )
    # Attempts for every delivery (as the dispatcher records them), the open one's included.
    db.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, attempted_at, duration_ms, status_code, error) "
        "SELECT id, 1, now() - interval '399 days', 5, 503, 'unavailable' FROM message_delivery "
        "WHERE message_id = ANY(%s)",
        ([done, waiting, recent],),
    )
    doomed = [r["id"] for r in db.execute("SELECT id FROM message_delivery WHERE message_id = %s", (done,))]
    assert len(doomed) == 2

    run_every_job_once(dsn)

    assert {
        r["id"] for r in db.execute("SELECT id FROM messages WHERE id = ANY(%s)", ([done, waiting, recent],))
    } == {waiting, recent}
    assert not db.execute("SELECT 1 FROM message_delivery WHERE message_id = %s", (done,)).fetchall()
    assert not db.execute("SELECT 1 FROM delivery_attempts WHERE delivery_id = ANY(%s)", (doomed,)).fetchall()
    for kept in (waiting, recent):
        [row] = db.execute(
            "SELECT count(*) AS deliveries, (SELECT count(*) FROM delivery_attempts a "
            "JOIN message_delivery d ON d.id = a.delivery_id WHERE d.message_id = %s) AS attempts "
            "FROM message_delivery WHERE message_id = %s",
            (kept, kept),
        ).fetchall()
        assert (row["deliveries"], row["attempts"]) == (2, 2)
    assert not db.execute("SELECT 1 FROM messages_history WHERE id = %s", (done,)).fetchall()
    assert not db.execute(
        "SELECT 1 FROM message_delivery_history WHERE message_id = %s OR id = ANY(%s)", (done, doomed)
    ).fetchall()
    assert not db.execute(
        "SELECT 1 FROM delivery_attempts_history WHERE delivery_id = ANY(%s)", (doomed,)
    ).fetchall()


def test_history_is_trimmed_after_its_keep_days(
    client: Client, db: psycopg.Connection[Any], dsn: str, run_id: str, history_cleanup: None
) -> None:
    client.subscribe(run_id + "-hist", "async", message_type=run_id + ".*")
    old, recent = client.publish(run_id + ".e", {}), client.publish(run_id + ".e", {})
    client.ack(client.claim(run_id + "-hist", 10))
    db.execute(
        "UPDATE messages SET created_at = now() - interval '400 days' WHERE id = ANY(%s)", ([old, recent],)
    )
    run_every_job_once(dsn)
    assert (
        db.execute(
            "SELECT count(*) AS n FROM messages_history WHERE id = ANY(%s)", ([old, recent],)
        ).fetchone()["n"]
        == 2
    )
    # One of them was archived long ago: past the history's keep days it goes, with its deliveries.
    for table, column in (("messages_history", "id"), ("message_delivery_history", "message_id")):
        db.execute(
            f"UPDATE {table} SET archived_at = now() - interval '3650 days' WHERE {column} = %s", (old,)
        )
    run_every_job_once(dsn)
    assert [
        r["id"] for r in db.execute("SELECT id FROM messages_history WHERE id = ANY(%s)", ([old, recent],))
    ] == [recent]
    assert [
        r["message_id"]
        for r in db.execute(
            "SELECT message_id FROM message_delivery_history WHERE message_id = ANY(%s)", ([old, recent],)
        )
    ] == [recent]


def test_cron_run_details_are_trimmed(db: psycopg.Connection[Any], dsn: str) -> None:
    job = db.execute("SELECT jobid FROM cron.job WHERE jobname = 'pgmsg-release-expired-leases'").fetchone()
    [old, fresh, running] = [
        db.execute(
            "INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, "
            "return_message, start_time, end_time) "
            "VALUES (%s, nextval('cron.runid_seq'), 0, current_database(), 'postgres', 'SELECT 1', %s, '', "
            "now() - %s::interval, now() - %s::interval + interval '1 second') RETURNING runid",
            (job["jobid"], status, age, age),
        ).fetchone()["runid"]
        for status, age in (("succeeded", "3650 days"), ("succeeded", "1 minute"), ("running", "3650 days"))
    ]
    db.execute("UPDATE cron.job_run_details SET end_time = NULL WHERE runid = %s", (running,))
    run_every_job_once(dsn)
    kept = {
        r["runid"]
        for r in db.execute(
            "SELECT runid FROM cron.job_run_details WHERE runid = ANY(%s)", ([old, fresh, running],)
        )
    }
    assert kept == {fresh, running}
    db.execute("DELETE FROM cron.job_run_details WHERE runid = ANY(%s)", ([fresh, running],))


def test_stale_dispatcher_rows_go_live_ones_stay(
    client: Client, db: psycopg.Connection[Any], dsn: str, run_id: str
) -> None:
    names = {k: f"{run_id}-{k}" for k in ("gone", "live", "holding")}
    db.execute(
        "INSERT INTO pgmsg_dispatchers (name, started_at, last_seen) VALUES "
        "(%(gone)s, now() - interval '400 days', now() - interval '400 days'), "
        "(%(live)s, now() - interval '1 day', now()), "
        "(%(holding)s, now() - interval '400 days', now() - interval '400 days')",
        names,
    )
    # A dispatcher that stopped reporting in but still holds a lease keeps its row.
    client.subscribe(run_id + "-disp", "async", message_type=run_id + ".*")
    client.publish(run_id + ".e", {})
    [held] = client.claim(run_id + "-disp", 1, consumer=names["holding"])
    try:
        run_every_job_once(dsn)
        kept = {
            r["name"]
            for r in db.execute("SELECT name FROM pgmsg_dispatchers WHERE name LIKE %s", (run_id + "%",))
        }
        assert kept == {names["live"], names["holding"]}
    finally:
        db.execute("DELETE FROM pgmsg_dispatchers WHERE name LIKE %s", (run_id + "%",))
        assert held.id


def old_dead_letter(
    client: Client, db: psycopg.Connection[Any], run_id: str, consumer: str
) -> tuple[int, Any]:
    """A message ten years old whose one delivery, to ``consumer``, is a dead letter."""
    client.subscribe(consumer, "async", message_type=run_id + ".*", max_attempts=1)
    message_id = client.publish(run_id + ".e", {})
    [delivery] = client.claim(consumer, 1)
    db.execute(
        "UPDATE message_delivery SET status = 'dead', dead_at = now(), lease_expires_at = NULL WHERE id = %s",
        (delivery.id,),
    )
    db.execute("UPDATE messages SET created_at = now() - interval '3650 days' WHERE id = %s", (message_id,))
    return message_id, delivery


@pytest.mark.parametrize("retire", ["pgmsg_archive_messages", "pgmsg_expire_messages"])
def test_archive_never_takes_a_delivery_being_redriven(
    client: Client, db: psycopg.Connection[Any], dsn: str, run_id: str, history_cleanup: None, retire: str
) -> None:
    """Redrive in an open transaction (dead -> pending), then archive (or expire, without
    history): neither may carry the message away under it (it is skipped; the next run decides
    again)."""
    message_id, delivery = old_dead_letter(client, db, run_id, run_id + "-rd")

    archived: list[int] = []
    with (
        psycopg.connect(dsn, row_factory=dict_row) as redriver,
        psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as archiver,
    ):
        assert (
            redriver.execute("SELECT pgmsg_redrive(%s, %s) AS n", (run_id + "-rd", [delivery.id])).fetchone()[
                "n"
            ]
            == 1
        )
        pid = archiver.info.backend_pid
        worker = threading.Thread(
            target=lambda: archived.append(
                archiver.execute(f"SELECT {retire}(interval '3000 days', 100) AS n").fetchone()["n"]
            )
        )
        worker.start()
        # The archive either finishes or waits for the redrive's row lock; then the redrive commits.
        wait_until(
            lambda: (
                archived
                or db.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,)
                ).fetchone()
            ),
            timeout=30,
        )
        redriver.commit()
        worker.join(timeout=30)
        assert not worker.is_alive()

    row = db.execute("SELECT status FROM message_delivery WHERE id = %s", (delivery.id,)).fetchone()
    assert row is not None and row["status"] == "pending"  # the redrive stands
    assert db.execute("SELECT 1 FROM messages WHERE id = %s", (message_id,)).fetchone()
    assert not db.execute("SELECT 1 FROM messages_history WHERE id = %s", (message_id,)).fetchone()


def test_redrive_after_an_uncommitted_archive_changes_nothing(
    client: Client, db: psycopg.Connection[Any], dsn: str, run_id: str, history_cleanup: None
) -> None:
    """The other order: the archive holds the message; a redrive waits, then finds nothing
    left to redrive and says so (0), and the history keeps the dead delivery."""
    _message_id, delivery = old_dead_letter(client, db, run_id, run_id + "-rd2")

    redriven: list[int] = []
    with (
        psycopg.connect(dsn, row_factory=dict_row) as archiver,
        psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as redriver,
    ):
        assert (
            archiver.execute("SELECT pgmsg_archive_messages(interval '3000 days', 100) AS n").fetchone()["n"]
            >= 1
        )
        pid = redriver.info.backend_pid
        worker = threading.Thread(
            target=lambda: redriven.append(
                redriver.execute(
                    "SELECT pgmsg_redrive(%s, %s) AS n", (run_id + "-rd2", [delivery.id])
                ).fetchone()["n"]
            )
        )
        worker.start()
        wait_until(
            lambda: (
                redriven
                or db.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,)
                ).fetchone()
            ),
            timeout=30,
        )
        archiver.commit()
        worker.join(timeout=30)
        assert not worker.is_alive()

    assert redriven == [0]
    assert not db.execute("SELECT 1 FROM message_delivery WHERE id = %s", (delivery.id,)).fetchone()
    [row] = db.execute("SELECT status FROM message_delivery_history WHERE id = %s", (delivery.id,)).fetchall()
    assert row["status"] == "dead"


def test_attempts_stay_tied_to_their_delivery(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    """What the attempts' foreign key promised, now kept by statement-level triggers (024):
    an attempt of a missing delivery is refused, a delivery's id cannot change under its
    attempts, deleting deliveries (or their message) deletes their attempts, and TRUNCATE
    takes them along."""
    client.subscribe(run_id + "-att", "async", message_type=run_id + ".*")
    first, second = client.publish(run_id + ".e", {}), client.publish(run_id + ".e", {})
    ids = {
        r["message_id"]: r["id"]
        for r in db.execute(
            "SELECT id, message_id FROM message_delivery WHERE message_id = ANY(%s)", ([first, second],)
        )
    }
    db.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, status_code) SELECT unnest(%s::bigint[]), 1, 503",
        (list(ids.values()),),
    )

    [missing] = db.execute("SELECT max(id) + 1000 AS id FROM message_delivery").fetchall()
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match=f"no delivery with id {missing['id']}"):
        db.execute("INSERT INTO delivery_attempts (delivery_id, attempt) VALUES (%s, 1)", (missing["id"],))
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="no delivery with id"):
        db.execute(
            "UPDATE delivery_attempts SET delivery_id = %s WHERE delivery_id = %s",
            (missing["id"], ids[first]),
        )
    with pytest.raises(psycopg.errors.CheckViolation, match="cannot change"):
        db.execute("UPDATE message_delivery SET id = %s WHERE id = %s", (missing["id"], ids[first]))

    db.execute("DELETE FROM message_delivery WHERE id = %s", (ids[first],))
    db.execute("DELETE FROM messages WHERE id = %s", (second,))
    assert not db.execute(
        "SELECT 1 FROM delivery_attempts WHERE delivery_id = ANY(%s)", (list(ids.values()),)
    ).fetchall()

    # TRUNCATE (in a transaction rolled back: the database is shared with the other tests).
    with db.transaction(force_rollback=True):
        third = client.publish(run_id + ".e", {})
        db.execute(
            "INSERT INTO delivery_attempts (delivery_id, attempt) "
            "SELECT id, 1 FROM message_delivery WHERE message_id = %s",
            (third,),
        )
        db.execute("TRUNCATE message_delivery")
        assert db.execute("SELECT count(*) AS n FROM delivery_attempts").fetchone()["n"] == 0
