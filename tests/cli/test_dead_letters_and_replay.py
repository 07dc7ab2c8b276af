"""pgmsg dead-letters and pgmsg replay against the deployed database."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from click.testing import Result

from pgmsg import Client
from tests.support.receiver import Receiver

Run = Callable[..., Result]


def make_dead(client: Client, client_id: str, message_type: str, count: int = 1) -> list[int]:
    """Dead letters the honest way: one attempt allowed, and it was nacked."""
    client.subscribe(client_id, "async", message_type=message_type, max_attempts=1)
    for n in range(count):
        client.publish(message_type, {"n": n})
    ids = []
    for delivery in client.claim(client_id, count):
        assert client.nack(delivery, error="handler exploded") == "dead"
        ids.append(delivery.id)
    return sorted(ids)


def statuses(db: psycopg.Connection[Any], ids: list[int]) -> list[str]:
    return [
        r["status"]
        for r in db.execute("SELECT status FROM message_delivery WHERE id = ANY(%s) ORDER BY id", (ids,))
    ]


def test_list_and_show(run: Run, client: Client, run_id: str) -> None:
    [dead] = make_dead(client, run_id + "-dl", run_id + ".e")
    listed = run("dead-letters", "list", "--client", run_id + "-dl", "--json")
    assert listed.exit_code == 0
    [row] = json.loads(listed.stdout)
    assert (row["id"], row["status"], row["last_error"]) == (dead, "dead", "handler exploded")
    table = run("dead-letters", "list", "--client", run_id + "-dl")
    assert str(dead) in table.output and "handler exploded" in table.output

    shown = run("dead-letters", "show", str(dead))
    assert shown.exit_code == 0, shown.output
    assert (
        "handler exploded" in shown.output and '"n": 0' in shown.output and "no HTTP attempts" in shown.output
    )
    detail = json.loads(run("dead-letters", "show", str(dead), "--json").stdout)
    assert detail["delivery"]["id"] == dead and detail["message"]["payload"] == {"n": 0}
    assert detail["attempts"] == []
    datetime.fromisoformat(detail["delivery"]["dead_at"])  # ISO 8601 in JSON


def test_show_includes_http_attempts(
    run: Run, client: Client, db: psycopg.Connection[Any], run_id: str, receiver: Receiver
) -> None:
    receiver.status = 400
    client.subscribe(
        run_id + "-hook",
        "http",
        message_type=run_id + ".*",
        webhook_url=receiver.url,
        push_mode="in_transaction",
    )
    [delivery] = client.deliveries(client.publish(run_id + ".e", {"order": 7}))
    db.execute(
        "UPDATE message_delivery SET status = 'dead', dead_at = now() WHERE id = %s", (delivery["id"],)
    )
    detail = json.loads(run("dead-letters", "show", str(delivery["id"]), "--json").stdout)
    [attempt] = detail["attempts"]
    assert attempt["status_code"] == 400 and detail["message"]["payload"] == {"order": 7}
    shown = run("dead-letters", "show", str(delivery["id"]))
    assert "attempt" in shown.output and "400" in shown.output


def test_unknown_delivery_and_empty_lists(run: Run) -> None:
    missing = run("dead-letters", "show", "999999999999")
    assert missing.exit_code == 1 and "no delivery with id 999999999999" in missing.output
    nobody = run("dead-letters", "list", "--client", "nobody-at-all")
    assert nobody.exit_code == 0 and nobody.output.strip() == "no dead letters"
    assert json.loads(run("dead-letters", "list", "--client", "nobody-at-all", "--json").stdout) == []


def test_redrive_asks_and_declining_changes_nothing(
    run: Run, client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    ids = make_dead(client, run_id + "-rd", run_id + ".e", count=3)
    declined = run("dead-letters", "redrive", "--client", run_id + "-rd", input="n\n")
    assert declined.exit_code == 1 and "Redrive 3 dead letter(s)" in declined.output
    assert statuses(db, ids) == ["dead"] * 3

    by_id = run("dead-letters", "redrive", "--id", str(ids[0]), "--yes")
    assert by_id.exit_code == 0 and "redrove 1 dead letter" in by_id.output
    assert statuses(db, ids) == ["pending", "dead", "dead"]

    rest = run("--json", "dead-letters", "redrive", "--client", run_id + "-rd", input="y\n")
    assert rest.exit_code == 0
    assert json.loads(rest.stdout) == {"redriven": 2}  # the question went to stderr
    assert statuses(db, ids) == ["pending"] * 3

    none_left = run("dead-letters", "redrive", "--client", run_id + "-rd")
    assert none_left.exit_code == 0 and "no dead letters to redrive" in none_left.output


def test_redrive_argument_errors(run: Run, client: Client, run_id: str) -> None:
    unknown = run("dead-letters", "redrive", "--client", "nobody-" + run_id, "--yes")
    assert unknown.exit_code == 1 and f"no subscription for client 'nobody-{run_id}'" in unknown.output
    both = run("dead-letters", "redrive", "--client", "x", "--id", "1")
    assert both.exit_code == 2 and "not both" in both.output


def test_replay_from_id(run: Run, client: Client, db: psycopg.Connection[Any], run_id: str) -> None:
    client.subscribe(run_id + "-rp", "async", message_type=run_id + ".*")
    first, second = client.publish(run_id + ".e", {"n": 1}), client.publish(run_id + ".e", {"n": 2})
    client.ack(d for d in client.claim(run_id + "-rp", 10))
    client.subscribe(run_id + "-late", "async", message_type=run_id + ".*")  # never had them

    declined = run("replay", run_id + "-rp", "--from-id", str(first), input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert {d["status"] for d in client.deliveries(first)} == {"delivered"}

    result = run("replay", run_id + "-rp", "--from-id", str(first), "--yes")
    assert result.exit_code == 0, result.output
    assert f"replayed 2 deliveries to '{run_id}-rp'" in result.output
    rows = db.execute(
        "SELECT status, replay_count FROM message_delivery WHERE client_id = %s", (run_id + "-rp",)
    ).fetchall()
    assert [(r["status"], r["replay_count"]) for r in rows] == [("pending", 1)] * 2

    late = run("--json", "replay", run_id + "-late", "--from-id", str(second), "--yes")
    assert json.loads(late.stdout) == {"client_id": run_id + "-late", "replayed": 1}


def test_replay_time_window(run: Run, client: Client, db: psycopg.Connection[Any], run_id: str) -> None:
    client.subscribe(run_id + "-tw", "async", message_type=run_id + ".*")
    old, recent = client.publish(run_id + ".e", {}), client.publish(run_id + ".e", {})
    client.ack(d for d in client.claim(run_id + "-tw", 10))
    db.execute("UPDATE messages SET created_at = now() - interval '3 days' WHERE id = %s", (old,))

    assert "replayed 1 deliveries" in run("replay", run_id + "-tw", "--since", "1h", "--yes").output
    assert [d["status"] for d in client.deliveries(old)] == ["delivered"]

    start = (datetime.now(UTC) - timedelta(days=4)).isoformat()
    window = run("replay", run_id + "-tw", "--since", start, "--until", "1d", "--yes")
    assert window.exit_code == 0 and "replayed 1 deliveries" in window.output
    assert [d["status"] for d in client.deliveries(old)] == ["pending"]
    assert [d["replay_count"] for d in client.deliveries(recent)] == [1]  # outside the window: once only


def test_replay_errors(run: Run, client: Client, run_id: str) -> None:
    nobody = run("replay", "nobody", "--from-id", "1", "--yes")
    assert nobody.exit_code == 1 and "no subscription for client 'nobody'" in nobody.output
    client.subscribe(run_id + "-re", "async")
    for args, message in [
        ((), "exactly one of --from-id or --since"),
        (("--from-id", "1", "--since", "1h"), "exactly one"),
        (("--from-id", "1", "--until", "1h"), "--until needs --since"),
        (("--since", "1h", "--until", "2h"), "--until must be later"),
        (("--since", "last tuesday"), "Invalid value for '--since'"),
    ]:
        result = run("replay", run_id + "-re", *args, "--yes")
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    run("subscriptions", "pause", run_id + "-re")
    paused = run("replay", run_id + "-re", "--from-id", "1", "--yes")
    assert paused.exit_code == 1 and "has no active subscription" in paused.output
