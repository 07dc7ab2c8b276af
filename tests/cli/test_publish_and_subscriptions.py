"""pgmsg publish and pgmsg subscriptions against the deployed database."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from click.testing import Result

from pgmsg import Client

Run = Callable[..., Result]


def test_publish_from_argument_file_and_stdin(run: Run, client: Client, run_id: str, tmp_path: Path) -> None:
    client.subscribe(run_id + "-pub", "async", message_type=run_id + ".*")
    result = run("publish", run_id + ".order", '{"order_id": 1}', "--namespace", "shop", "--key", "c-1")
    assert result.exit_code == 0, result.output
    message = client.message(int(result.stdout.strip()))
    assert (message["payload"], message["namespace"], message["message_key"]) == (
        {"order_id": 1},
        "shop",
        "c-1",
    )
    assert [d["client_id"] for d in client.deliveries(message["id"])] == [run_id + "-pub"]  # fanned out

    body = tmp_path / "order.json"
    body.write_text('{"order_id": 2}')
    from_file = run("--json", "publish", run_id + ".order", "--file", str(body))
    assert from_file.exit_code == 0, from_file.output
    published = json.loads(from_file.stdout)
    assert client.message(published["id"])["payload"] == {"order_id": 2}
    assert published["message_type"] == run_id + ".order"

    from_stdin = run("publish", run_id + ".order", "-", "--json", input='{"order_id": 3}')
    assert client.message(json.loads(from_stdin.stdout)["id"])["payload"] == {"order_id": 3}


def test_bad_json_payload_is_refused_and_publishes_nothing(
    run: Run, db: psycopg.Connection[Any], run_id: str
) -> None:
    result = run("publish", run_id + ".order", '{"order_id": ')
    assert result.exit_code == 2
    assert "payload is not valid JSON" in result.output
    assert (
        db.execute(
            "SELECT count(*) AS n FROM messages WHERE message_type = %s", (run_id + ".order",)
        ).fetchone()["n"]
        == 0
    )
    both = run("publish", run_id + ".order", "{}", "--file", "-")
    assert both.exit_code == 2 and "not both" in both.output


def test_json_null_payload_is_refused_not_replaced_by_an_empty_object(
    run: Run, db: psycopg.Connection[Any], run_id: str, tmp_path: Path
) -> None:
    source = tmp_path / "null.json"
    source.write_text("null\n")
    for args in (("null",), ("--file", str(source))):
        result = run("publish", run_id + ".nothing", *args)
        assert result.exit_code == 2, result.output
        assert "payload is JSON null" in result.output
    assert (
        db.execute(
            "SELECT count(*) AS n FROM messages WHERE message_type = %s", (run_id + ".nothing",)
        ).fetchone()["n"]
        == 0
    )


def test_invalid_message_type_is_the_database_message(run: Run) -> None:
    result = run("publish", "", "{}")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "message_type" in result.output


def test_add_list_and_secrets_stay_out_of_tables(run: Run, run_id: str) -> None:
    added = run(
        "subscriptions",
        "add",
        run_id + "-hook",
        "--mode",
        "http",
        "--type",
        run_id + ".*",
        "--url",
        "http://127.0.0.1:9/webhook",
        "--timeout-ms",
        "1500",
        "--max-attempts",
        "3",
        "--payload-filter",
        '{"country": "DE"}',
        "--ordered",
    )
    assert added.exit_code == 0, added.output
    assert "http://127.0.0.1:9/webhook" in added.output and "whsec_" not in added.output

    table = run("subscriptions", "list", "--client", run_id + "-hook")
    assert table.exit_code == 0
    assert run_id + "-hook" in table.output and "ordered" in table.output and "whsec_" not in table.output

    [listed] = json.loads(run("subscriptions", "list", "--client", run_id + "-hook", "--json").stdout)
    assert "signing_secret" not in listed
    assert (listed["max_attempts"], listed["http_timeout_ms"]) == (3, 1500)
    assert listed["payload_filter"] == {"country": "DE"}

    [secret_view] = json.loads(
        run("--json", "subscriptions", "list", "--client", run_id + "-hook", "--show-secrets").stdout
    )
    assert secret_view["signing_secret"].startswith("whsec_")
    again = json.loads(
        run(
            "--json",
            "subscriptions",
            "add",
            run_id + "-hook",
            "--mode",
            "http",
            "--type",
            run_id + ".*",
            "--url",
            "http://127.0.0.1:9/other",
            "--show-secrets",
        ).stdout
    )
    assert (
        again["id"] == listed["id"] and again["webhook_url"] == "http://127.0.0.1:9/other"
    )  # updated in place
    # The secret is kept, and not read back: the add shows a secret only when it set one.
    assert again["signing_secret"] is None
    [kept] = json.loads(
        run("--json", "subscriptions", "list", "--client", run_id + "-hook", "--show-secrets").stdout
    )
    assert kept["signing_secret"] == secret_view["signing_secret"]
    refused = run("subscriptions", "list", "--show-secrets")
    assert refused.exit_code == 2 and "only applies to --json" in refused.output


def test_add_is_refused_with_the_database_hint(run: Run, run_id: str) -> None:
    result = run("subscriptions", "add", run_id + "-nourl", "--mode", "http")
    assert result.exit_code == 1
    assert "an http subscription needs a webhook_url" in result.output
    bad_filter = run("subscriptions", "add", run_id + "-f", "--mode", "async", "--payload-filter", "[1]")
    assert bad_filter.exit_code == 2 and "must be a JSON object" in bad_filter.output


def test_notify_payload_is_an_opt_in_of_notify_subscriptions(run: Run, client: Client, run_id: str) -> None:
    plain = json.loads(run("--json", "subscriptions", "add", run_id + "-dash", "--mode", "notify").stdout)
    assert plain["notify_payload"] is False  # ids only by default
    opted = run("subscriptions", "add", run_id + "-dash", "--mode", "notify", "--notify-payload")
    assert opted.exit_code == 0, opted.output
    assert "notify_payload" in opted.output  # shown among the options
    [sub] = client.subscriptions(run_id + "-dash")
    assert sub.notify_payload is True and sub.id == plain["id"]
    refused = run("subscriptions", "add", run_id + "-q", "--mode", "async", "--notify-payload")
    assert refused.exit_code == 1
    assert "notify_payload applies to notify subscriptions only" in refused.output
    assert client.subscriptions(run_id + "-q") == []


def test_max_in_flight_is_set_shown_updated_and_checked(run: Run, client: Client, run_id: str) -> None:
    hook = ("subscriptions", "add", run_id + "-hook", "--mode", "http", "--url", "http://127.0.0.1:9/hook")
    added = run(*hook, "--max-in-flight", "16")
    assert added.exit_code == 0, added.output
    assert "max_in_flight=16" in added.output  # shown among the options
    listed = run("subscriptions", "list", "--client", run_id + "-hook")
    assert "max_in_flight=16" in listed.output
    [shown] = json.loads(run("--json", "subscriptions", "list", "--client", run_id + "-hook").stdout)
    assert shown["max_in_flight"] == 16
    # Adding it again updates it: a new limit, then none (the dispatcher's default).
    assert run(*hook, "--max-in-flight", "2").exit_code == 0
    assert [s.max_in_flight for s in client.subscriptions(run_id + "-hook")] == [2]
    assert run(*hook).exit_code == 0
    assert [s.max_in_flight for s in client.subscriptions(run_id + "-hook")] == [None]
    assert "max_in_flight" not in run("subscriptions", "list", "--client", run_id + "-hook").output
    for bad in ("0", "1001", "abc", "2.5"):
        refused = run(*hook, "--max-in-flight", bad)
        assert refused.exit_code == 2, refused.output
        assert "--max-in-flight" in refused.output
    assert [s.max_in_flight for s in client.subscriptions(run_id + "-hook")] == [None]
    # The database's own check, for an async subscription click cannot know about.
    not_http = run("subscriptions", "add", run_id + "-q", "--mode", "async", "--max-in-flight", "4")
    assert not_http.exit_code == 1
    assert "max_in_flight applies to http subscriptions only" in not_http.output
    assert client.subscriptions(run_id + "-q") == []


def test_pause_and_resume(run: Run, client: Client, db: psycopg.Connection[Any], run_id: str) -> None:
    first = client.subscribe(run_id + "-pr", "async", message_type=run_id + ".a")
    second = client.subscribe(run_id + "-pr", "async", message_type=run_id + ".b")

    def active() -> dict[int, bool]:
        return {s.id: s.active for s in client.subscriptions(run_id + "-pr")}

    assert run("subscriptions", "pause", run_id + "-pr").exit_code == 0
    assert active() == {first.id: False, second.id: False}
    assert client.deliveries(client.publish(run_id + ".a", {})) == []  # paused: no fan-out
    db.execute(
        "UPDATE subscriptions SET deactivated_reason = 'endpoint answered 410' WHERE id = %s", (first.id,)
    )
    resumed = run("subscriptions", "resume", run_id + "-pr", "--id", str(first.id), "--json")
    assert resumed.exit_code == 0 and json.loads(resumed.stdout) == {
        "client_id": run_id + "-pr",
        "resumed": [first.id],
    }
    assert active() == {first.id: True, second.id: False}
    assert client.subscriptions(run_id + "-pr")[0].deactivated_reason is None


def test_pause_unknown_client_or_id_fails(run: Run, client: Client, run_id: str) -> None:
    result = run("subscriptions", "pause", "nobody-" + run_id)
    assert result.exit_code == 1
    assert f"no subscription for client 'nobody-{run_id}'" in result.output
    client.subscribe(run_id + "-x", "async")
    wrong_id = run("subscriptions", "resume", run_id + "-x", "--id", "999999999")
    assert wrong_id.exit_code == 1 and "no subscription with id 999999999" in wrong_id.output


def test_remove_asks_first(run: Run, client: Client, run_id: str) -> None:
    client.subscribe(run_id + "-rm", "async")
    declined = run("subscriptions", "remove", run_id + "-rm", input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert len(client.subscriptions(run_id + "-rm")) == 1  # untouched
    accepted = run("subscriptions", "remove", run_id + "-rm", input="y\n")
    assert accepted.exit_code == 0 and "removed 1 subscription" in accepted.output
    assert client.subscriptions(run_id + "-rm") == []
    again = run("subscriptions", "remove", run_id + "-rm", "--yes")
    assert again.exit_code == 1 and "no subscription for client" in again.output
