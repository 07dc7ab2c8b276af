"""Malformed input is refused with a message that says what to fix, and leaves no row."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgmsg import Client, InvalidInput


def count(db: psycopg.Connection[Any], table: str) -> int:
    return db.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("INSERT INTO messages (payload) VALUES ('{}')", "message_type is required"),
        ("INSERT INTO messages (message_type, payload) VALUES ('', '{}')", "message_type is required"),
        (
            "INSERT INTO messages (message_type, payload) VALUES ('order created!', '{}')",
            "invalid message_type 'order created!'",
        ),
        (
            "INSERT INTO messages (message_type, payload) VALUES ('order.created', 'not json')",
            "invalid input syntax for type json",
        ),
        (
            "INSERT INTO messages (message_type, namespace) VALUES ('order.created', 'bad namespace')",
            "invalid namespace 'bad namespace'",
        ),
        (
            "INSERT INTO messages (message_type, payload) VALUES ('order.created', NULL)",
            "payload must be a JSON value, not NULL",
        ),
    ],
)
def test_malformed_messages_are_refused(db: psycopg.Connection[Any], statement: str, message: str) -> None:
    before = count(db, "messages")
    with pytest.raises(psycopg.Error) as caught:
        db.execute(statement)
    assert message in caught.value.diag.message_primary
    assert count(db, "messages") == before


@pytest.mark.parametrize(
    ("columns", "values", "message", "hint"),
    [
        (
            "client_id, delivery_mode",
            "'x-client', 'smoke-signal'",
            "unknown delivery_mode 'smoke-signal'",
            "async, http, notify",
        ),
        (
            "client_id, delivery_mode",
            "'x-client', 'http'",
            "an http subscription needs a webhook_url",
            "webhook_url",
        ),
        (
            "client_id, delivery_mode, webhook_url",
            "'x-client', 'http', 'ftp://files.example/x'",
            "invalid webhook_url 'ftp://files.example/x'",
            "http:// or https://",
        ),
        ("client_id, delivery_mode", "'bad client', 'async'", "invalid client_id 'bad client'", "1-63"),
        (
            "client_id, delivery_mode, notify_channel",
            f"'x-client', 'notify', '{'c' * 64}'",
            "longer than 63 bytes",
            "shorter",
        ),
        (
            "client_id, delivery_mode, http_timeout_ms",
            "'x-client', 'async', 5",
            "http_timeout_ms 5 is out of range",
            "100 and 60000",
        ),
    ],
)
def test_malformed_subscriptions_are_refused(
    db: psycopg.Connection[Any], columns: str, values: str, message: str, hint: str
) -> None:
    before = count(db, "subscriptions")
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        db.execute(f"INSERT INTO subscriptions ({columns}) VALUES ({values})")
    assert message in caught.value.diag.message_primary
    assert hint in caught.value.diag.message_hint
    assert count(db, "subscriptions") == before


def test_client_reports_refusals_as_invalid_input(client: Client, run_id: str) -> None:
    with pytest.raises(
        InvalidInput, match="unknown delivery_mode 'carrier-pigeon'.*hint: delivery_mode must be"
    ):
        client.subscribe(run_id + "-a", "carrier-pigeon")
    with pytest.raises(InvalidInput, match="an http subscription needs a webhook_url"):
        client.subscribe(run_id + "-b", "http")
    with pytest.raises(InvalidInput, match="invalid message_type"):
        client.publish("no spaces allowed", {"a": 1})
    with pytest.raises(InvalidInput, match="unsupported Unicode escape sequence"):
        client.publish(run_id + ".nul", {"text": "a\u0000b"})


def test_batch_with_one_bad_message_publishes_none(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    before = count(db, "messages")
    with pytest.raises(InvalidInput, match="invalid message_type"):
        client.publish_many([(run_id + ".ok", {"n": 1}, "default"), ("not ok", {"n": 2}, "default")])
    assert count(db, "messages") == before


def test_notify_channel_defaults_to_client_id(db: psycopg.Connection[Any], run_id: str) -> None:
    row = db.execute(
        "INSERT INTO subscriptions (client_id, delivery_mode) VALUES (%s, 'notify') RETURNING notify_channel",
        (run_id + "-dash",),
    ).fetchone()
    assert row["notify_channel"] == run_id + "-dash"


@pytest.mark.parametrize(
    "columns",
    [
        "(client_id, delivery_mode, notify_channel) VALUES ('{run}', 'notify', 'pgmsg_http')",
        "(client_id, delivery_mode, notify_channel) VALUES ('{run}', 'notify', 'pgmsg_deliveries')",
        "(client_id, delivery_mode) VALUES ('pgmsg_http', 'notify')",  # the channel defaults to the id
    ],
)
def test_a_notify_subscription_may_not_use_pgmsgs_own_wake_up_channels(
    db: psycopg.Connection[Any], run_id: str, columns: str
) -> None:
    """pgmsg_http wakes every dispatcher and pgmsg_deliveries every consumer: notifications there
    would wake them on every matching publish (and defeat the dispatcher's quiet while busy)."""
    before = count(db, "subscriptions")
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        db.execute("INSERT INTO subscriptions " + columns.format(run=run_id))
    assert "wake-up channel" in str(refused.value) and refused.value.diag.message_hint
    assert count(db, "subscriptions") == before
