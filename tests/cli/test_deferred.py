"""pgmsg publish --deferred and pgmsg deferred against the deployed database.

The deployed fan-out worker is held off with its advisory lock (tests.sql.test_deferred.paused)
wherever a test needs to see messages waiting; the CLI's own moves then run on another session,
so they are made through the lock's session instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from click.testing import Result

from pgmsg import Client
from tests.sql.test_deferred import clashing, move, paused  # noqa: F401  (fixture)
from tests.support.waiting import wait_until

Run = Callable[..., Result]


def test_publish_deferred_is_fanned_out_by_the_deployed_worker(run: Run, client: Client, run_id: str) -> None:
    client.subscribe(run_id + "-cli", "async", message_type=run_id + ".*")
    result = run("--json", "publish", run_id + ".order", '{"order_id": 9}', "--deferred", "--key", "k")
    assert result.exit_code == 0, result.output
    published = json.loads(result.stdout)
    assert published["deferred"] is True
    deliveries = wait_until(
        lambda: client.deliveries(published["id"]),
        timeout=20,
        message="the fan-out worker did not fan the message out",
    )
    assert [d["client_id"] for d in deliveries] == [run_id + "-cli"]
    assert client.message(published["id"])["payload"] == {"order_id": 9}


def test_status_failed_retry_and_fan_out(
    run: Run,
    client: Client,
    paused: psycopg.Connection[Any],
    run_id: str,
) -> None:
    move(paused, 100000)
    assert run("deferred", "status").stdout.startswith("0 waiting; ")
    waiting = client.publish(run_id + ".w", {}, deferred=True)
    status = run("--json", "deferred", "status")
    state = json.loads(status.stdout)
    assert state["waiting"] == 1 and state["oldest_waiting_age_seconds"] >= 0

    taken = clashing(client, paused, run_id)
    # pgmsg deferred fan-out is another session: the worker's lock (held here) makes it move nothing.
    assert run("deferred", "fan-out").stdout.strip() == "moved 0 message(s)"
    move(paused)
    assert client.message(waiting)["message_type"] == run_id + ".w"

    failing = run("deferred", "status")
    assert failing.exit_code == 0
    assert "1 failed (pgmsg deferred failed lists them)" in failing.stdout
    listed = run("--json", "deferred", "failed")
    [failure] = [f for f in json.loads(listed.stdout) if f["id"] == taken]
    assert "duplicate key value" in failure["error"]
    table = run("deferred", "failed")
    assert str(taken) in table.stdout and "duplicate key value violates" in table.stdout

    unknown = run("deferred", "retry", "--id", str(taken + 10_000_000), "--yes")
    assert unknown.exit_code == 2 and "no failed deferred message with id" in unknown.output
    declined = run("deferred", "retry", "--id", str(taken), input="n\n")
    assert declined.exit_code == 1
    assert client.deferred_status()["failed"] >= 1
    paused.execute("DELETE FROM messages WHERE id = %s", (taken,))
    retried = run("--json", "deferred", "retry", "--id", str(taken), "--yes")
    assert json.loads(retried.stdout) == {"retried": 1}
    move(paused)
    assert client.message(taken)["message_type"] == run_id + ".clash"
    assert run("deferred", "retry", "--yes").stdout.strip() == "no failed deferred messages"


def test_health_reports_failed_deferred_messages(
    run: Run,
    client: Client,
    paused: psycopg.Connection[Any],
    run_id: str,
) -> None:
    taken = clashing(client, paused, run_id)
    healthy = run("health", "--check", "deferred")
    assert "ok       deferred  1 waiting, the oldest" in healthy.stdout
    old = run("health", "--check", "deferred", "--max-deferred-age", "0")
    assert old.exit_code == 1 and "is pgmsg-fan-out running?" in old.stdout
    move(paused)
    failed = run("health", "--check", "deferred")
    assert failed.exit_code == 1
    assert "deferred-failed" in failed.stdout and "see pgmsg deferred failed, then retry" in failed.stdout
    paused.execute("DELETE FROM message_inbox WHERE id = %s", (taken,))
    assert run("health", "--check", "deferred").exit_code == 0
