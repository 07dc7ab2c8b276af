"""pgmsg subscriptions test / rotate-secret, against the sample receiver on 127.0.0.1,
which verifies Standard Webhooks signatures with pgmsg.signing.verify."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgmsg import Client, signing
from pgmsg.cli import cli
from pgmsg.webhook_receiver import WebhookReceiver
from tests.support.receiver import Receiver

Run = Callable[..., Result]


@pytest.fixture
def events() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture
def sample_receiver(events: list[tuple[str, dict[str, Any]]]) -> Iterator[WebhookReceiver]:
    """pgmsg's sample receiver (signature checks), beside the tests' plain ``receiver``."""
    # Started with a throwaway secret: the port must exist before the subscription,
    # the subscription's secret exists only after it.
    r = WebhookReceiver(
        [signing.generate_secret()], "127.0.0.1", 0, on_event=lambda wid, body: events.append((wid, body))
    ).start()
    yield r
    r.stop()


def secret_of(run: Run, client_id: str) -> str:
    [sub] = json.loads(run("subscriptions", "list", "--client", client_id, "--json", "--show-secrets").stdout)
    return sub["signing_secret"]


def test_signed_test_event_is_accepted(
    run: Run,
    client: Client,
    run_id: str,
    sample_receiver: WebhookReceiver,
    events: list[tuple[str, dict[str, Any]]],
) -> None:
    sub = client.subscribe(
        run_id + "-hook",
        "http",
        message_type=run_id + ".*",
        webhook_url=sample_receiver.url,
        http_timeout_ms=2000,
    )
    sample_receiver.secrets = [secret_of(run, run_id + "-hook")]

    result = run("subscriptions", "test", str(sub.id))
    assert result.exit_code == 0, result.output
    assert f"POST {sample_receiver.url} -> HTTP 200" in result.output
    [(webhook_id, event)] = events
    assert webhook_id.startswith(f"test_{sub.id}_") and webhook_id in result.output
    assert (event["id"], event["type"]) == (0, "pgmsg.test")
    assert event["payload"] == {"test": True, "subscription_id": sub.id, "client_id": run_id + "-hook"}

    as_json = json.loads(run("subscriptions", "test", str(sub.id), "--json").stdout)
    assert (as_json["status"], as_json["ok"], as_json["url"]) == (200, True, sample_receiver.url)
    assert as_json["duration_ms"] > 0 and json.loads(as_json["response"]) == {"ok": True}
    assert len(events) == 2 and events[0][0] != events[1][0]  # a fresh webhook-id each time


def test_wrong_secret_is_refused_and_exits_1(
    run: Run, client: Client, run_id: str, sample_receiver: WebhookReceiver
) -> None:
    sub = client.subscribe(run_id + "-hook", "http", webhook_url=sample_receiver.url)
    # The sample receiver keeps its throwaway secret, so the signature cannot match.
    result = run("subscriptions", "test", str(sub.id))
    assert result.exit_code == 1
    assert "HTTP 401" in result.output and "no valid signature" in result.output
    assert sample_receiver.counters["rejected"] == 1


def test_rotation_signs_with_both_secrets_during_the_overlap(
    run: Run, client: Client, run_id: str, sample_receiver: WebhookReceiver
) -> None:
    sub = client.subscribe(run_id + "-rot", "http", webhook_url=sample_receiver.url)
    old = secret_of(run, run_id + "-rot")
    rotated = run("subscriptions", "rotate-secret", str(sub.id), "--overlap-hours", "1")
    assert rotated.exit_code == 0
    new = rotated.stdout.strip()
    assert new.startswith("whsec_") and new != old
    assert secret_of(run, run_id + "-rot") == new

    for secrets in ([old], [new]):  # a receiver on either secret accepts during the overlap
        sample_receiver.secrets = secrets
        assert run("subscriptions", "test", str(sub.id)).exit_code == 0

    as_json = json.loads(
        run("--json", "subscriptions", "rotate-secret", str(sub.id), "--overlap-hours", "0").stdout
    )
    newest = as_json["signing_secret"]
    sample_receiver.secrets = [new]  # no overlap: the previous secret no longer signs
    assert run("subscriptions", "test", str(sub.id)).exit_code == 1
    sample_receiver.secrets = [newest]
    assert run("subscriptions", "test", str(sub.id)).exit_code == 0


def test_non_2xx_and_unreachable_endpoints_exit_1(
    run: Run, client: Client, run_id: str, receiver: Receiver
) -> None:
    receiver.status = 503
    sub = client.subscribe(run_id + "-503", "http", webhook_url=receiver.url)
    result = run("subscriptions", "test", str(sub.id))
    assert result.exit_code == 1 and "HTTP 503" in result.output and "refused" in result.output
    [request] = receiver.requests
    signing.verify([secret_of(run, run_id + "-503")], request.headers, request.body)
    receiver.stop()
    gone = run("subscriptions", "test", str(sub.id), "--json")  # nobody listens on that port any more
    assert gone.exit_code == 1
    assert json.loads(gone.stdout)["status"] is None and "did not accept" in gone.output


def test_only_http_subscriptions_and_known_ids(run: Run, client: Client, run_id: str) -> None:
    sub = client.subscribe(run_id + "-async", "async")
    not_http = run("subscriptions", "test", str(sub.id))
    assert not_http.exit_code == 1 and "only http subscriptions" in not_http.output
    missing = run("subscriptions", "test", "999999999")
    assert missing.exit_code == 1 and "no subscription with id 999999999" in missing.output
    rotate_missing = run("subscriptions", "rotate-secret", "999999999")
    assert rotate_missing.exit_code == 1 and "no http subscription with id 999999999" in rotate_missing.output


def test_allowlist_is_checked_before_sending(
    run: Run, client: Client, run_id: str, db: psycopg.Connection[Any]
) -> None:
    # The database refuses such URLs on write; a row that predates an allowlist
    # change is the case the send-time check exists for.
    sub = client.subscribe(run_id + "-ssrf", "http", webhook_url="http://127.0.0.1:9/webhook")
    # replica role: this session alone skips the validation trigger, nobody else's writes.
    db.execute("SET session_replication_role = replica")
    try:
        db.execute(
            "UPDATE subscriptions SET webhook_url = 'http://169.254.169.254/latest' WHERE id = %s", (sub.id,)
        )
    finally:
        db.execute("RESET session_replication_role")
    result = run("subscriptions", "test", str(sub.id))
    assert result.exit_code == 1
    assert "refused" in result.output and "metadata" in result.output


def test_an_administrator_sends_a_signed_test_event_without_reading_the_secret(
    client: Client,
    run_id: str,
    sample_receiver: WebhookReceiver,
    events: list[tuple[str, dict[str, Any]]],
    dsn: str,
    inventory_vars: dict[str, Any],
    run: Run,
) -> None:
    """pgmsg_ops (pgmsg_admin, the operator role the CLI is for) may not read signing secrets (017);
    the database signs the test event for it, with the subscription's secrets."""
    [ops] = [r for r in inventory_vars["messaging_schema_admins"] if r["name"] == "pgmsg_ops"]
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params.update(user=ops["name"], password=ops["password"])
    ops_dsn = psycopg.conninfo.make_conninfo(**params)
    with psycopg.connect(ops_dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT signing_secret FROM subscriptions LIMIT 1")
    sub = client.subscribe(run_id + "-ops", "http", webhook_url=sample_receiver.url, http_timeout_ms=2000)
    old = secret_of(run, run_id + "-ops")
    run("subscriptions", "rotate-secret", str(sub.id), "--overlap-hours", "1")
    for secrets in ([old], [secret_of(run, run_id + "-ops")]):  # signed with both during the overlap
        sample_receiver.secrets = secrets
        result = CliRunner().invoke(
            cli, ["subscriptions", "test", str(sub.id)], env={"PGMSG_DSN": ops_dsn}, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        assert f"POST {sample_receiver.url} -> HTTP 200" in result.output
    assert [e["payload"] for _, e in events] == [
        {"test": True, "subscription_id": sub.id, "client_id": run_id + "-ops"}
    ] * 2
    assert all(wid.startswith(f"test_{sub.id}_") for wid, _ in events)
    # Not a signing oracle for anyone else: monitoring and clients cannot call it.
    for role in ("pgmsg_exporter_local", "rls_probe_a"):
        declared = [
            r
            for key in ("messaging_schema_monitors", "messaging_schema_clients")
            for r in inventory_vars.get(key, [])
            if r["name"] == role
        ]
        params.update(user=role, password=declared[0]["password"])
        with (
            psycopg.connect(psycopg.conninfo.make_conninfo(**params)) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("SELECT * FROM pgmsg_webhook_test_event(%s)", (sub.id,))
