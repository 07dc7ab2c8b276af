"""Webhook policy from an attacker's and a careless operator's side: a bad allowlist row, session
curl options, a redirecting endpoint, signatures made late in a long transaction."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgmsg import Client
from pgmsg.errors import InvalidInput
from tests.support.dispatching import running
from tests.support.receiver import Received, Receiver, Reply
from tests.support.signatures import refused_by_both, verified_by_both
from tests.support.waiting import wait_until


def redirect_to(target: Receiver) -> Callable[[Received], Reply]:
    """Answers every request with a 307 to ``target``, and a body the endpoint keeps to itself."""
    return lambda _: Reply(307, {"Location": target.url}, b"secret answer of the endpoint")


def test_dispatcher_skips_an_allowlist_row_it_cannot_parse_and_keeps_delivering(
    client: Client, db: psycopg.Connection[Any], dsn: str, receiver: Receiver, run_id: str
) -> None:
    # A superuser wrote a row by hand that pgmsg_set_webhook_allowlist would refuse.
    db.execute("INSERT INTO pgmsg_webhook_allowlist (entry, network) VALUES ('127.1', '127.1'::cidr)")
    try:
        client.subscribe(run_id + "-hook", "http", message_type=run_id + ".*", webhook_url=receiver.url)
        message_id = client.publish(run_id + ".paid", {"n": 1})
        with running(dsn, name=run_id, workers=2, idle_poll_seconds=0.2):
            row = wait_until(
                lambda: (r := client.deliveries(message_id)[0])["status"] == "delivered" and r, timeout=20
            )
        assert row["push_status_code"] == 200 and len(receiver.requests) == 1
    finally:
        db.execute("DELETE FROM pgmsg_webhook_allowlist WHERE entry = '127.1'")


def in_transaction_delivery(conn: psycopg.Connection[Any], message_id: int) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM message_delivery WHERE message_id = %s", (message_id,)).fetchone()
    assert row is not None
    return dict(row)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("CURLOPT_PROXY", "http://127.0.0.1:9"),
        ("CURLOPT_TIMEOUT_MS", "1"),
        ("CURLOPT_CAINFO", "/nonexistent/ca.pem"),
        ("CURLOPT_USERAGENT", "attacker"),
    ],
)
def test_session_curl_options_do_not_reach_the_in_transaction_push(
    client: Client, dsn: str, receiver: Receiver, run_id: str, option: str, value: str
) -> None:
    client.subscribe(
        run_id + "-hook",
        "http",
        message_type=run_id + ".*",
        webhook_url=receiver.url,
        push_mode="in_transaction",
    )
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SELECT http_set_curlopt(%s, %s)", (option, value))
        conn.execute("SET http.timeout_msec = 1")
        message_id = conn.execute(
            "INSERT INTO messages (message_type, payload) VALUES (%s, '{}') RETURNING id", (run_id + ".x",)
        ).fetchone()["id"]
        row = in_transaction_delivery(conn, message_id)
    assert row["status"] == "delivered", row["last_error"]
    [request] = receiver.requests
    headers = request.headers
    assert headers.get("User-Agent") != "attacker"


@contextmanager
def in_transaction_push(dsn: str, enabled: bool) -> Iterator[None]:
    """The deployment's setting as the superuser sets it, restored afterwards to what it was."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = conn.execute("SELECT pgmsg_in_transaction_push_enabled()").fetchone()[0]
        conn.execute("SELECT pgmsg_set_in_transaction_push(%s)", (enabled,))
        try:
            yield
        finally:
            conn.execute("SELECT pgmsg_set_in_transaction_push(%s)", (before,))


def test_with_in_transaction_push_off_an_in_transaction_subscription_is_refused(
    client: Client, db: psycopg.Connection[Any], dsn: str, receiver: Receiver, run_id: str
) -> None:
    with in_transaction_push(dsn, False):
        with pytest.raises(InvalidInput) as refused:
            client.subscribe(
                run_id + "-hook",
                "http",
                message_type=run_id + ".*",
                webhook_url=receiver.url,
                push_mode="in_transaction",
            )
        assert "messaging_schema_in_transaction_push" in str(refused.value)
        assert "redirect" in str(refused.value)
        # Nor can an existing dispatcher subscription be switched to it in plain SQL.
        client.subscribe(run_id + "-hook", "http", message_type=run_id + ".*", webhook_url=receiver.url)
        with pytest.raises(psycopg.errors.CheckViolation, match="messaging_schema_in_transaction_push"):
            db.execute(
                "UPDATE subscriptions SET push_mode = 'in_transaction' WHERE client_id = %s",
                (run_id + "-hook",),
            )
    assert (
        db.execute(
            "SELECT push_mode FROM subscriptions WHERE client_id = %s", (run_id + "-hook",)
        ).fetchone()["push_mode"]
        == "dispatcher"
    )


def test_with_in_transaction_push_off_nothing_is_sent_for_an_existing_in_transaction_subscription(
    client: Client, db: psycopg.Connection[Any], dsn: str, receiver: Receiver, run_id: str
) -> None:
    inside = receiver.another(host="127.0.0.2")
    receiver.respond = redirect_to(inside)
    redirecting = receiver
    # Created while the deployment allowed it.
    client.subscribe(
        run_id + "-hook",
        "http",
        message_type=run_id + ".*",
        webhook_url=redirecting.url,
        push_mode="in_transaction",
        max_attempts=100,
    )
    with in_transaction_push(dsn, False):
        message_id = client.publish(run_id + ".x", {"n": 1})
        row = in_transaction_delivery(db, message_id)
        assert row["status"] == "failed" and row["push_status_code"] is None
        assert "in-transaction push is turned off" in row["last_error"]
        assert "messaging_schema_in_transaction_push" in row["last_error"]
        # Neither re-send path sends it either.
        assert db.execute("SELECT pgmsg_retry_in_transaction_pushes() AS n").fetchone()["n"] == 0
        [retried] = db.execute("SELECT * FROM retry_failed_http_push(%s)", (run_id + "-hook",)).fetchall()
        assert retried["status"] == "failed" and "turned off" in retried["last_error"]
    assert redirecting.requests == [] and inside.requests == []


@pytest.mark.parametrize(
    "login",
    [
        "pgmsg_publisher_local",
        "analytics_service",
        "pgmsg_dispatcher_local",
        "pgmsg_ops",
        "pgmsg_exporter_local",
    ],
)
def test_no_application_role_or_session_setting_turns_in_transaction_push_on(
    client: Client, dsn: str, receiver: Receiver, inventory_vars: dict[str, Any], run_id: str, login: str
) -> None:
    password = {
        r["name"]: r["password"]
        for key in (
            "messaging_schema_publishers",
            "messaging_schema_clients",
            "messaging_schema_dispatchers",
            "messaging_schema_admins",
            "messaging_schema_monitors",
        )
        for r in inventory_vars.get(key, [])
    }[login]
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params.update(user=login, password=password)
    with (
        in_transaction_push(dsn, False),
        psycopg.connect(psycopg.conninfo.make_conninfo(**params), autocommit=True) as conn,
    ):
        for attempt in (
            "SELECT pgmsg_set_in_transaction_push(true)",
            "UPDATE pgmsg_settings SET in_transaction_push = true",
            "INSERT INTO pgmsg_settings (singleton, in_transaction_push) VALUES (true, true) "
            "ON CONFLICT (singleton) DO UPDATE SET in_transaction_push = true",
            "DELETE FROM pgmsg_settings",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(attempt)
        for setting in (
            "pgmsg.in_transaction_push",
            "pgmsg.in_transaction_push_enabled",
            "messaging_schema.in_transaction_push",
            "http.follow_location",
        ):
            conn.execute(f"SET {setting} = 'on'")
        assert conn.execute("SELECT pgmsg_in_transaction_push_enabled()").fetchone()[0] is False
        if login == "pgmsg_ops":  # the one role that may write subscriptions
            with pytest.raises(psycopg.errors.CheckViolation, match="messaging_schema_in_transaction_push"):
                conn.execute(
                    "INSERT INTO subscriptions (client_id, delivery_mode, message_type, webhook_url, "
                    "push_mode) VALUES (%s, 'http', %s, %s, 'in_transaction')",
                    (run_id + "-hook", run_id + ".*", receiver.url),
                )
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgmsg_settings").fetchone()[0] == 1


def test_with_in_transaction_push_on_a_redirect_is_followed_as_the_readme_says(
    client: Client, db: psycopg.Connection[Any], dsn: str, receiver: Receiver, run_id: str
) -> None:
    # README: with messaging_schema_in_transaction_push on, pgsql-http follows up to 5 redirects,
    # so the signed POST reaches the Location target; last_error is "HTTP <code>" of the final answer.
    inside = receiver.another(host="127.0.0.2", status=503)
    receiver.respond = redirect_to(inside)
    redirecting = receiver
    with in_transaction_push(dsn, True):
        sub = client.subscribe(
            run_id + "-hook",
            "http",
            message_type=run_id + ".*",
            webhook_url=redirecting.url,
            push_mode="in_transaction",
        )
        message_id = client.publish(run_id + ".x", {"n": 1})
        row = in_transaction_delivery(db, message_id)
    assert len(redirecting.requests) == 1
    [request] = inside.requests
    headers, body = request.headers, request.body
    verified_by_both([sub.signing_secret], headers, body, tolerance_seconds=30)
    assert row["status"] == "failed" and row["push_status_code"] == 503
    assert row["last_error"] == "HTTP 503"


def test_in_transaction_push_to_a_host_name_needs_that_exact_name_in_the_allowlist(
    client: Client, db: psycopg.Connection[Any], dsn: str, receiver: Receiver, run_id: str
) -> None:
    port = receiver.port
    before = [r["entry"] for r in db.execute("SELECT entry FROM pgmsg_webhook_allowlist ORDER BY entry")]
    assert "localhost" in before  # the local inventory lists it exactly
    db.execute("SELECT pgmsg_set_webhook_allowlist(%s)", ([*before, "*.localhost"],))
    try:
        with in_transaction_push(dsn, True):
            client.subscribe(
                run_id + "-exact",
                "http",
                message_type=run_id + ".*",
                webhook_url=f"http://localhost:{port}/hook",
                push_mode="in_transaction",
            )
            # curl sends *.localhost to loopback, where the endpoint listens: only the check stops it.
            client.subscribe(
                run_id + "-wild",
                "http",
                message_type=run_id + ".*",
                webhook_url=f"http://hooks.localhost:{port}/hook",
                push_mode="in_transaction",
            )
            message_id = client.publish(run_id + ".x", {"n": 1})
        rows = {
            r["client_id"]: r
            for r in db.execute("SELECT * FROM message_delivery WHERE message_id = %s", (message_id,))
        }
        assert rows[run_id + "-exact"]["status"] == "delivered", rows[run_id + "-exact"]["last_error"]
        wild = rows[run_id + "-wild"]
        assert wild["status"] == "failed" and wild["push_status_code"] is None
        assert wild["last_error"].startswith("in-transaction push to host hooks.localhost refused")
        assert "not through *.domain" in wild["last_error"]
        assert len(receiver.requests) == 1 and receiver.requests[0].headers["Host"] == f"localhost:{port}"
    finally:
        db.execute("SELECT pgmsg_set_webhook_allowlist(%s)", (before,))


def test_in_transaction_push_signs_with_the_send_time(
    client: Client, dsn: str, receiver: Receiver, run_id: str
) -> None:
    sub = client.subscribe(
        run_id + "-hook",
        "http",
        message_type=run_id + ".*",
        webhook_url=receiver.url,
        push_mode="in_transaction",
    )
    with psycopg.connect(dsn, row_factory=dict_row) as conn, conn.transaction():
        conn.execute("SELECT now()")
        opened = time.time()
        while time.time() - opened < 2.5:  # a transaction that has been open a while
            conn.execute("SELECT pg_sleep(0.5)")
        sent_after = int(time.time())
        conn.execute("INSERT INTO messages (message_type, payload) VALUES (%s, '{}')", (run_id + ".x",))
    [request] = receiver.requests
    headers, body = request.headers, request.body
    assert int(headers["webhook-timestamp"]) >= sent_after
    verified_by_both([sub.signing_secret], headers, body, tolerance_seconds=2)
    moved = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}
    refused_by_both([sub.signing_secret], moved, body)


def test_retry_job_stops_at_its_batch(
    client: Client, db: psycopg.Connection[Any], run_id: str, receiver: Receiver
) -> None:
    receiver.status = 503
    client.subscribe(
        run_id + "-hook",
        "http",
        message_type=run_id + ".*",
        webhook_url=receiver.url,
        push_mode="in_transaction",
        max_attempts=100,
    )
    for n in range(60):
        client.publish(run_id + ".x", {"n": n})
    before = len(receiver.requests)
    sent = db.execute("SELECT pgmsg_retry_in_transaction_pushes() AS n").fetchone()["n"]
    assert sent == 50 and len(receiver.requests) - before == 50
