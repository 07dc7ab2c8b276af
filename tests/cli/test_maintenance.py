"""pgmsg archive and pgmsg purge against the deployed database.

The rows made old here are ten years old and the commands are given an age of
3000 days, so that nobody else's data in the shared database qualifies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from click.testing import Result

from pgmsg import Client

Run = Callable[..., Result]
AGE = "3000d"


def test_archive_moves_finished_messages_in_batches(
    run: Run, client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    client.subscribe(run_id + "-arch", "async", message_type=run_id + ".*")
    done = [client.publish(run_id + ".e", {"n": n}) for n in range(3)]
    waiting = client.publish(run_id + ".e", {"n": "waiting"})
    client.ack(d for d in client.claim(run_id + "-arch", 10) if d.message_id in done)
    everything = [*done, waiting]
    db.execute(
        "UPDATE messages SET created_at = now() - interval '3650 days' WHERE id = ANY(%s)", (everything,)
    )
    try:
        result = run("archive", "--older-than", AGE, "--batch", "1", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"archived": 3, "estimated": 3}
        assert "Archiving messages" in result.stderr  # the progress bar, on stderr
        live = [r["id"] for r in db.execute("SELECT id FROM messages WHERE id = ANY(%s)", (everything,))]
        assert live == [waiting]  # its delivery is not finished
        history = db.execute(
            "SELECT message_id, status FROM message_delivery_history WHERE message_id = ANY(%s) "
            "ORDER BY message_id",
            (done,),
        ).fetchall()
        assert [(r["message_id"], r["status"]) for r in history] == [(m, "delivered") for m in done]

        again = run("archive", "--older-than", AGE)
        assert again.exit_code == 0 and "archived 0 message(s) older than 3000d" in again.output
    finally:
        db.execute("DELETE FROM message_delivery_history WHERE message_id = ANY(%s)", (everything,))
        db.execute("DELETE FROM messages_history WHERE id = ANY(%s)", (everything,))


def test_archive_needs_a_valid_age(run: Run) -> None:
    missing = run("archive")
    assert missing.exit_code == 2 and "--older-than" in missing.output
    bad = run("archive", "--older-than", "30")
    assert bad.exit_code == 2 and "has no unit" in bad.output
    bad_batch = run("archive", "--older-than", "30d", "--batch", "0")
    assert bad_batch.exit_code == 2


def test_purge_asks_then_deletes_old_finished_deliveries(
    run: Run, client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    client.subscribe(run_id + "-purge", "async", message_type=run_id + ".*")
    old, fresh = client.publish(run_id + ".e", {}), client.publish(run_id + ".e", {})
    client.ack(d for d in client.claim(run_id + "-purge", 10))
    db.execute(
        "UPDATE message_delivery SET delivered_at = now() - interval '3650 days' WHERE message_id = %s",
        (old,),
    )

    def remaining() -> list[int]:
        return [
            r["message_id"]
            for r in db.execute(
                "SELECT message_id FROM message_delivery WHERE client_id = %s ORDER BY message_id",
                (run_id + "-purge",),
            )
        ]

    declined = run("purge", "--older-than", AGE, input="n\n")
    assert declined.exit_code == 1 and "Delete 1 delivered/notified deliveries" in declined.output
    assert remaining() == [old, fresh]

    result = run("purge", "--older-than", AGE, "--yes")
    assert result.exit_code == 0, result.output
    assert "purged 1 deliveries" in result.output
    assert remaining() == [fresh]
    assert db.execute("SELECT 1 FROM messages WHERE id = %s", (old,)).fetchone()  # the message stays

    nothing = run("--json", "purge", "--older-than", AGE)
    assert json.loads(nothing.stdout) == {"purged": 0}


def test_archive_without_history_asks_then_deletes_and_keeps_nothing(
    run: Run, client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    client.subscribe(run_id + "-exp", "async", message_type=run_id + ".*")
    done, waiting = client.publish(run_id + ".e", {"n": 1}), client.publish(run_id + ".e", {"n": 2})
    client.ack(d for d in client.claim(run_id + "-exp", 10) if d.message_id == done)
    db.execute(
        "UPDATE messages SET created_at = now() - interval '3650 days' WHERE id = ANY(%s)", ([done, waiting],)
    )

    declined = run("archive", "--older-than", AGE, "--no-history", input="n\n")
    assert declined.exit_code == 1 and "keeping no history" in declined.output
    assert (
        db.execute("SELECT count(*) AS n FROM messages WHERE id = ANY(%s)", ([done, waiting],)).fetchone()[
            "n"
        ]
        == 2
    )

    result = run("--json", "archive", "--older-than", AGE, "--no-history", "--yes")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"deleted": 1, "estimated": 1}
    assert [
        r["id"] for r in db.execute("SELECT id FROM messages WHERE id = ANY(%s)", ([done, waiting],))
    ] == [waiting]
    assert not db.execute("SELECT 1 FROM message_delivery WHERE message_id = %s", (done,)).fetchone()
    assert not db.execute("SELECT 1 FROM messages_history WHERE id = %s", (done,)).fetchone()
    assert not db.execute("SELECT 1 FROM message_delivery_history WHERE message_id = %s", (done,)).fetchone()
