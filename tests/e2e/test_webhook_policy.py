"""Webhook policy from an attacker's and a careless operator's side: a bad allowlist row, session
curl options, a redirecting endpoint, signatures made late in a long transaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgmsg import Client
from pgmsg.signing import verify
from tests.support.dispatching import running
from tests.support.waiting import wait_until


class Recording(BaseHTTPRequestHandler):
    """Answers with the server's (status, headers); records each request's headers."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        server: Any = self.server
        server.seen.append((dict(self.headers.items()), body))
        self.send_response(server.status)
        for k, v in server.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(b"secret answer of the endpoint")

    do_GET = do_POST  # noqa: N815 (a redirect may turn the POST into a GET)

    def log_message(self, *args: object) -> None:
        pass


def serve(host: str, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    server: Any = ThreadingHTTPServer((host, 0), Recording)
    server.status, server.headers, server.seen = status, headers or {}, []
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://{host}:{server.server_address[1]}/hook"
    return server


@pytest.fixture
def endpoint() -> Iterator[Any]:
    server = serve("127.0.0.1")
    yield server
    server.shutdown()
    server.server_close()


def test_dispatcher_skips_an_allowlist_row_it_cannot_parse_and_keeps_delivering(
        client: Client, db: psycopg.Connection[Any], dsn: str, endpoint: Any, run_id: str) -> None:
    # A superuser wrote a row by hand that pgmsg_set_webhook_allowlist would refuse.
    db.execute("INSERT INTO pgmsg_webhook_allowlist (entry, network) VALUES ('127.1', '127.1'::cidr)")
    try:
        client.subscribe(run_id + "-hook", "http", message_type=run_id + ".*", webhook_url=endpoint.url)
        message_id = client.publish(run_id + ".paid", {"n": 1})
        with running(dsn, name=run_id, workers=2, idle_poll_seconds=0.2):
            row = wait_until(lambda: (r := client.deliveries(message_id)[0])["status"] == "delivered" and r,
                             timeout=20)
        assert row["push_status_code"] == 200 and len(endpoint.seen) == 1
    finally:
        db.execute("DELETE FROM pgmsg_webhook_allowlist WHERE entry = '127.1'")


def in_transaction_delivery(conn: psycopg.Connection[Any], message_id: int) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM message_delivery WHERE message_id = %s", (message_id,)).fetchone()
    assert row is not None
    return dict(row)


@pytest.mark.parametrize(("option", "value"), [
    ("CURLOPT_PROXY", "http://127.0.0.1:9"),
    ("CURLOPT_TIMEOUT_MS", "1"),
    ("CURLOPT_CAINFO", "/nonexistent/ca.pem"),
    ("CURLOPT_USERAGENT", "attacker"),
])
def test_session_curl_options_do_not_reach_the_in_transaction_push(
        client: Client, dsn: str, endpoint: Any, run_id: str, option: str, value: str) -> None:
    client.subscribe(run_id + "-hook", "http", message_type=run_id + ".*", webhook_url=endpoint.url,
                     push_mode="in_transaction")
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SELECT http_set_curlopt(%s, %s)", (option, value))
        conn.execute("SET http.timeout_msec = 1")
        message_id = conn.execute("INSERT INTO messages (message_type, payload) VALUES (%s, '{}') RETURNING id", (run_id + ".x",)).fetchone()["id"]
        row = in_transaction_delivery(conn, message_id)
    assert row["status"] == "delivered", row["last_error"]
    [(headers, _)] = endpoint.seen
    assert headers.get("User-Agent") != "attacker"


@pytest.mark.xfail(strict=True, reason="pgsql-http 1.6 sets CURLOPT_FOLLOWLOCATION itself and offers no option "
                   "to stop it (issue 15 item 2, open): this reproduction must start passing when it is fixed")
def test_in_transaction_push_does_not_follow_a_redirect_out_of_the_allowlist(
        client: Client, db: psycopg.Connection[Any], run_id: str) -> None:
    inside = serve("127.0.0.2")
    redirecting = serve("127.0.0.1", 307, {"Location": inside.url})
    try:
        client.subscribe(run_id + "-hook", "http", message_type=run_id + ".*", webhook_url=redirecting.url,
                         push_mode="in_transaction")
        message_id = client.publish(run_id + ".x", {"n": 1})
        row = in_transaction_delivery(db, message_id)
        assert len(redirecting.seen) == 1
        assert inside.seen == [], "the signed push was re-sent to 127.0.0.2, outside the allowlist"
        assert row["status"] == "failed" and row["push_status_code"] == 307
        assert "secret answer" not in (row["last_error"] or "")
    finally:
        for server in (inside, redirecting):
            server.shutdown()
            server.server_close()


def test_in_transaction_push_signs_with_the_send_time(
        client: Client, dsn: str, endpoint: Any, run_id: str) -> None:
    sub = client.subscribe(run_id + "-hook", "http", message_type=run_id + ".*", webhook_url=endpoint.url,
                           push_mode="in_transaction")
    with psycopg.connect(dsn, row_factory=dict_row) as conn, conn.transaction():
        conn.execute("SELECT now()")
        opened = time.time()
        while time.time() - opened < 2.5:  # a transaction that has been open a while
            conn.execute("SELECT pg_sleep(0.5)")
        sent_after = int(time.time())
        conn.execute("INSERT INTO messages (message_type, payload) VALUES (%s, '{}')", (run_id + ".x",))
    [(headers, body)] = endpoint.seen
    assert int(headers["webhook-timestamp"]) >= sent_after
    verify([sub.signing_secret], {k.lower(): v for k, v in headers.items()}, body, tolerance_seconds=2)


def test_retry_job_stops_at_its_batch(client: Client, db: psycopg.Connection[Any], run_id: str) -> None:
    down = serve("127.0.0.1", 503)
    try:
        client.subscribe(run_id + "-hook", "http", message_type=run_id + ".*", webhook_url=down.url,
                         push_mode="in_transaction", max_attempts=100)
        for n in range(60):
            client.publish(run_id + ".x", {"n": n})
        before = len(down.seen)
        sent = db.execute("SELECT pgmsg_retry_in_transaction_pushes() AS n").fetchone()["n"]
        assert sent == 50 and len(down.seen) - before == 50
    finally:
        down.shutdown()
        down.server_close()
