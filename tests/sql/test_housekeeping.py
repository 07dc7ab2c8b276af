"""Each housekeeping job's effect: run the command pg_cron runs, check the rows."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgmsg import Client
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until


def job_command(db: psycopg.Connection[Any], name: str) -> str:
    row = db.execute("SELECT command FROM cron.job WHERE jobname = %s", ("pgmsg-" + name,)).fetchone()
    assert row is not None, f"job pgmsg-{name} is not scheduled"
    return row["command"]


def run_job(db: psycopg.Connection[Any], name: str) -> Any:
    """Run a job's command as pg_cron does (autocommit); its row, or None for a CALL."""
    cursor = db.execute(job_command(db, name))
    return cursor.fetchone() if cursor.description else None


def test_archive_moves_old_finished_messages_with_their_deliveries(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    client.subscribe(run_id + "-arch", "async", message_type=run_id + ".*")
    done, waiting, recent = (client.publish(run_id + ".e", {"n": n}) for n in range(3))
    client.ack(d for d in client.claim(run_id + "-arch", 10) if d.message_id in (done, recent))
    db.execute(
        "UPDATE messages SET created_at = now() - interval '400 days' WHERE id = ANY(%s)", ([done, waiting],)
    )

    run_job(db, "archive-messages")  # one run commits batch after batch until done
    live = {
        r["id"] for r in db.execute("SELECT id FROM messages WHERE id = ANY(%s)", ([done, waiting, recent],))
    }
    assert live == {waiting, recent}  # still being processed / too young: kept
    archived = db.execute("SELECT id, archived_at FROM messages_history WHERE id = %s", (done,)).fetchone()
    assert archived is not None and archived["archived_at"] is not None
    [delivery] = db.execute(
        "SELECT status FROM message_delivery_history WHERE message_id = %s", (done,)
    ).fetchall()
    assert delivery["status"] == "delivered"
    db.execute("DELETE FROM messages_history WHERE id = %s", (done,))
    db.execute("DELETE FROM message_delivery_history WHERE message_id = %s", (done,))


def test_purge_deletes_old_completed_deliveries_only(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    client.subscribe(run_id + "-purge", "async", message_type=run_id + ".*")
    old, fresh, pending = (client.publish(run_id + ".e", {}) for _ in range(3))
    client.ack(d for d in client.claim(run_id + "-purge", 10) if d.message_id in (old, fresh))
    db.execute(
        "UPDATE message_delivery SET delivered_at = now() - interval '30 days' WHERE message_id = %s", (old,)
    )
    run_job(db, "purge-deliveries")
    left = {
        r["message_id"]: r["status"]
        for r in db.execute(
            "SELECT message_id, status FROM message_delivery WHERE client_id = %s", (run_id + "-purge",)
        )
    }
    assert left == {fresh: "delivered", pending: "processing"}  # claimed, not finished: kept
    assert db.execute("SELECT 1 FROM messages WHERE id = %s", (old,)).fetchone()  # the message stays


def test_release_expired_leases(client: Client, db: psycopg.Connection[Any], run_id: str) -> None:
    client.subscribe(run_id + "-lease", "async", message_type=run_id + ".*", max_attempts=2)
    client.publish_many([(run_id + ".e", {}, "default")] * 2)
    first, second = client.claim(run_id + "-lease", 10, consumer="gone")
    db.execute(
        "UPDATE message_delivery SET lease_expires_at = now() - interval '1 second', attempts = 2 "
        "WHERE id = %s",
        (second.id,),
    )
    db.execute(
        "UPDATE message_delivery SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (first.id,),
    )
    assert next(iter(run_job(db, "release-expired-leases").values())) == 2
    rows = {
        r["id"]: r
        for r in db.execute("SELECT * FROM message_delivery WHERE id = ANY(%s)", ([first.id, second.id],))
    }
    assert (
        rows[first.id]["status"] == "pending"
        and "lease expired (claimed by gone)" in rows[first.id]["last_error"]
    )
    assert rows[second.id]["status"] == "dead"


def test_retry_job_resends_failed_in_transaction_pushes(
    client: Client, db: psycopg.Connection[Any], run_id: str, receiver: Receiver
) -> None:
    client.subscribe(
        run_id + "-sync",
        "http",
        message_type=run_id + ".*",
        webhook_url=receiver.url,
        push_mode="in_transaction",
    )
    receiver.status = 503
    message_id = client.publish(run_id + ".e", {"n": 1})
    [row] = client.deliveries(message_id)
    assert row["status"] == "failed"
    receiver.status = 200
    run_job(db, "retry-failed-http-push")
    [row] = client.deliveries(message_id)
    assert row["status"] == "delivered" and row["attempts"] == 2


def test_pg_cron_really_runs_the_jobs(db: psycopg.Connection[Any]) -> None:
    """The 30-second lease job has run and succeeded (pg_cron is configured and can log in)."""

    def succeeded() -> Any:
        return db.execute(
            "SELECT r.status FROM cron.job_run_details r JOIN cron.job j USING (jobid) "
            "WHERE j.jobname = 'pgmsg-release-expired-leases' AND r.status = 'succeeded' LIMIT 1"
        ).fetchone()

    assert wait_until(succeeded, timeout=75, interval=1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("SELECT pgmsg_archive_messages(interval '-1 day')", "is not a positive interval"),
        ("SELECT pgmsg_archive_messages(interval '1 day', 0)", "archive batch 0 is not positive"),
        ("SELECT pgmsg_expire_messages(interval '-1 day')", "expiry age -1 days is not a positive interval"),
        ("SELECT pgmsg_expire_messages(interval '1 day', 0)", "expiry batch 0 is not positive"),
        ("SELECT pgmsg_purge_deliveries(interval '-7 days')", "is not a positive interval"),
        ("SELECT pgmsg_purge_deliveries(interval '7 days', 0)", "purge batch 0 is not positive"),
        ("SELECT pgmsg_trim_history(interval '-1 day')", "is not a positive interval"),
        ("SELECT pgmsg_trim_cron_runs(interval '1 day', -5)", "trim batch -5 is not positive"),
        ("SELECT pgmsg_trim_dispatchers(interval '5 minutes')", "shorter than an hour"),
        ("CALL pgmsg_housekeep('vacuum', interval '1 day', 10)", "unknown housekeeping task"),
        (
            "CALL pgmsg_housekeep('archive', interval '1 day', 10, interval '0 seconds')",
            "budget 00:00:00 is not positive",
        ),
    ],
)
def test_housekeeping_arguments_are_checked(db: psycopg.Connection[Any], call: str, message: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match=message):
        db.execute(call)
