"""pgmsg deliveries list / stats and pgmsg retry against the deployed database."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import Result

from pgmsg import Client
from tests.support.receiver import Receiver

Run = Callable[..., Result]


def test_list_filters(run: Run, client: Client, db: psycopg.Connection[Any], run_id: str) -> None:
    client.subscribe(run_id + "-a", "async", message_type=run_id + ".*")
    client.subscribe(run_id + "-b", "async", message_type=run_id + ".*")
    old, new = client.publish(run_id + ".e", {"n": 1}), client.publish(run_id + ".e", {"n": 2})
    client.ack(d for d in client.claim(run_id + "-a", 10) if d.message_id == new)
    db.execute(
        "UPDATE message_delivery SET created_at = now() - interval '3 hours' WHERE message_id = %s", (old,)
    )

    def listed(*args: str) -> list[dict[str, Any]]:
        result = run("deliveries", "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    mine = listed("--client", run_id + "-a")
    # newest first
    assert [(d["message_id"], d["status"]) for d in mine] == [(new, "delivered"), (old, "processing")]
    assert [d["message_id"] for d in listed("--client", run_id + "-a", "--status", "processing")] == [old]
    assert {d["client_id"] for d in listed("--message-id", str(old))} == {run_id + "-a", run_id + "-b"}
    assert [d["message_id"] for d in listed("--client", run_id + "-b", "--since", "1h")] == [new]
    assert [d["message_id"] for d in listed("--client", run_id + "-b", "--since", "4 hours")] == [new, old]
    assert len(listed("--client", run_id + "-b", "--limit", "1")) == 1
    assert listed("--client", run_id + "-b", "--mode", "http") == []

    table = run("deliveries", "list", "--client", run_id + "-a")
    assert table.exit_code == 0
    header, *lines = table.output.splitlines()
    assert header.split()[:5] == ["id", "message_id", "client_id", "mode", "status"] and len(lines) == 2
    assert run("deliveries", "list", "--client", run_id + "-none").output.strip() == "no deliveries match"


def test_bad_since_is_a_usage_error(run: Run) -> None:
    for bad in ("yesterday", "10", "1 month", "-1h"):
        result = run("deliveries", "list", "--since", bad)
        assert result.exit_code == 2, bad
        assert "Invalid value for '--since'" in result.output


def test_stats_counts_and_delay_percentiles(
    run: Run, client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    client.subscribe(run_id + "-st", "async", message_type=run_id + ".*")
    ids = [client.publish(run_id + ".e", {"n": n}) for n in range(4)]
    # Delivered after exactly 1, 2 and 3 seconds; the fourth still pending.
    for seconds, message_id in zip((1, 2, 3), ids, strict=False):
        db.execute(
            "UPDATE message_delivery SET status = 'delivered', "
            "delivered_at = created_at + make_interval(secs => %s) WHERE message_id = %s",
            (seconds, message_id),
        )
    result = run("deliveries", "stats", "--client", run_id + "-st", "--since", "10m", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert (row["client_id"], row["delivery_mode"]) == (run_id + "-st", "async")
    assert (row["delivered"], row["pending"], row["dead"], row["total"]) == (3, 1, 0, 4)
    assert row["p50_seconds"] == pytest.approx(2.0)
    assert row["p95_seconds"] == pytest.approx(2.9)
    assert row["p99_seconds"] == pytest.approx(2.98)

    table = run("deliveries", "stats", "--client", run_id + "-st")
    assert table.exit_code == 0
    header, line = table.output.splitlines()
    assert header.split()[-3:] == ["p50", "p95", "p99"]
    assert line.split()[-3:] == ["2.00s", "2.90s", "2.98s"]


def test_retry_resends_failed_pushes_now(run: Run, client: Client, run_id: str, receiver: Receiver) -> None:
    client.subscribe(
        run_id + "-hook",
        "http",
        message_type=run_id + ".*",
        webhook_url=receiver.url,
        push_mode="in_transaction",
    )
    # 422, not 5xx: the scheduled retry job leaves permanent failures alone, so only the CLI resends.
    receiver.status = 422
    message_id = client.publish(run_id + ".e", {"n": 1})
    [delivery] = client.deliveries(message_id)
    assert delivery["status"] == "failed" and delivery["push_status_code"] == 422

    again = run("retry", "--client", run_id + "-hook", "--yes")
    assert again.exit_code == 1  # still refused: shown and non-zero
    assert "422" in again.output and "1 of 1 retried deliveries not delivered" in again.output

    receiver.status = 200
    result = run("retry", "--client", run_id + "-hook", "--since", "1h", "--json", "-y")
    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.stdout)
    assert (outcome["delivery_id"], outcome["status"]) == (delivery["id"], "delivered")
    assert outcome["push_status_code"] == 200
    assert len(receiver.requests) == 3
    assert receiver.requests[-1].headers["webhook-id"] == f"dlv_{delivery['id']}"  # signed like every push
    assert [a["status_code"] for a in client.attempts(delivery["id"])] == [422, 422, 200]

    nothing = run("retry", "--client", run_id + "-hook")
    assert nothing.exit_code == 0 and "no failed http deliveries to retry" in nothing.output


def test_retry_by_id(run: Run, client: Client, run_id: str, receiver: Receiver) -> None:
    client.subscribe(
        run_id + "-hook",
        "http",
        message_type=run_id + ".*",
        webhook_url=receiver.url,
        push_mode="in_transaction",
    )
    receiver.status = 404
    first, second = (client.deliveries(client.publish(run_id + ".e", {}))[0]["id"] for _ in range(2))
    receiver.status = 200
    result = run("retry", "--id", str(first), "--yes")
    assert result.exit_code == 0, result.output
    statuses = {
        d["id"]: d["status"] for d in run_json(run, "deliveries", "list", "--client", run_id + "-hook")
    }
    assert statuses[first] == "delivered" and statuses[second] == "failed"  # only the one named

    skipped = run("retry", "--id", str(first))
    assert skipped.exit_code == 1 and f"delivery {first} is not a failed http delivery" in skipped.output


def run_json(run: Run, *args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_stats_and_list_show_cancelled_deliveries(run: Run, client: Client, run_id: str) -> None:
    """A removed subscription's open deliveries end cancelled: counted and listable like the rest."""
    client.subscribe(run_id + "-gone", "async", message_type=run_id + ".*")
    client.publish(run_id + ".e", {"n": 1})
    client.remove_subscriptions(run_id + "-gone")
    [row] = json.loads(run("deliveries", "stats", "--client", run_id + "-gone", "--json").stdout)
    assert (row["cancelled"], row["pending"], row["total"]) == (1, 0, 1)
    listed = run("deliveries", "list", "--client", run_id + "-gone", "--status", "cancelled", "--json")
    assert listed.exit_code == 0, listed.output
    assert [d["status"] for d in json.loads(listed.stdout)] == ["cancelled"]


def failing_hook(client: Client, run_id: str, receiver: Receiver, count: int) -> tuple[str, list[int]]:
    """An in-transaction http subscription whose ``count`` pushes the receiver refused for good
    (422: the scheduled retry job leaves them alone); the receiver answers 200 from then on."""
    hook = run_id + "-hook"
    client.subscribe(
        hook, "http", message_type=run_id + ".*", webhook_url=receiver.url, push_mode="in_transaction"
    )
    receiver.status = 422
    ids = [client.deliveries(client.publish(run_id + ".e", {"n": n}))[0]["id"] for n in range(count)]
    receiver.status = 200
    assert len(receiver.requests) == count
    return hook, ids


def statuses(client: Client, ids: list[int]) -> list[str]:
    return [client.delivery(i)["status"] for i in ids]


def at_terminal(dsn: str, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``pgmsg ARGS`` in a real process whose stdin is a terminal (a pty), answering ``answer``."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode())
        return subprocess.run(
            [sys.executable, "-m", "pgmsg.cli", *args],
            stdin=terminal,
            capture_output=True,
            text=True,
            env={"PGMSG_DSN": dsn, "PATH": "/usr/bin:/bin"},
            timeout=60,
        )
    finally:
        os.close(controller)
        os.close(terminal)


def test_retry_says_what_it_will_resend_and_asks_at_a_terminal(
    dsn: str, client: Client, run_id: str, receiver: Receiver
) -> None:
    hook, ids = failing_hook(client, run_id, receiver, 2)
    declined = at_terminal(dsn, "n\n", "retry", "--client", hook, "--since", "1h")
    assert declined.returncode == 1, declined.stderr
    question = f"Re-send 2 failed HTTP push(es) of client '{hook}' created in the last 1h00m now?"
    assert question in declined.stderr
    assert len(receiver.requests) == 2 and statuses(client, ids) == ["failed", "failed"]

    accepted = at_terminal(dsn, "y\n", "retry", "--client", hook)
    assert accepted.returncode == 0, accepted.stderr
    assert f"Re-send 2 failed HTTP push(es) of client '{hook}' now?" in accepted.stderr
    assert len(receiver.requests) == 4 and statuses(client, ids) == ["delivered", "delivered"]
    assert accepted.stdout.count("delivered") == 2


def test_retry_without_a_terminal_refuses_and_resends_nothing(
    run: Run, dsn: str, client: Client, run_id: str, receiver: Receiver
) -> None:
    """A careless cron job (stdin not a terminal, no --yes) neither hangs nor re-sends."""
    hook, ids = failing_hook(client, run_id, receiver, 1)
    refused = run("retry", "--client", hook)
    assert refused.exit_code == 1
    assert "stdin is not a terminal" in refused.stderr and "--yes" in refused.stderr
    piped = run("retry", "--client", hook, input="y\n")  # `yes | pgmsg retry` is not a person
    assert piped.exit_code == 1 and "nothing was done" in piped.stderr
    as_json = run("retry", "--client", hook, "--json")
    assert as_json.exit_code == 1
    error = json.loads(as_json.stdout)["error"]
    assert error["kind"] == "confirmation-needed" and "--yes" in error["hint"]
    cron = subprocess.run(
        [sys.executable, "-m", "pgmsg.cli", "retry", "--client", hook],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={"PGMSG_DSN": dsn, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert cron.returncode == 1 and "stdin is not a terminal" in cron.stderr
    assert len(receiver.requests) == 1 and statuses(client, ids) == ["failed"]
    assert [a["status_code"] for a in client.attempts(ids[0])] == [422]

    done = run("retry", "--client", hook, "--yes")
    assert done.exit_code == 0, done.output
    assert len(receiver.requests) == 2 and statuses(client, ids) == ["delivered"]
