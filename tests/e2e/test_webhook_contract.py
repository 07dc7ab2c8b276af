"""One webhook contract: the in-transaction push (pgsql-http) and the dispatcher send the same request.

One delivery is pushed twice to a raw TCP receiver that keeps the bytes as they arrived: first by
pgsql-http inside the publishing transaction, then, after the subscription is switched to the
dispatcher and the delivery made due again, by the dispatcher. Both requests must carry the same
request line, the same body bytes and the same header lines in the same order, apart from what the
HTTP client adds for transport (Host, Content-Length, Accept) and the send time (webhook-timestamp,
and so webhook-signature). Each signature is checked by the `standardwebhooks` library, an
implementation of the specification that pgmsg does not share any code with.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from pgmsg import Client
from pgmsg.cli.webhook_probe import send_test_event
from tests.e2e.test_webhook_policy import in_transaction_push
from tests.support.dispatching import running
from tests.support.signatures import refused_by_both, verified_by_both
from tests.support.waiting import wait_until

#: Header lines the HTTP client writes for the connection, not the contract: Host and Content-Length
#: from both; pgsql-http's libcurl also sends Accept, Accept-Encoding, Connection: close and Charsets.
TRANSPORT = {b"host", b"content-length", b"accept", b"accept-encoding", b"connection", b"charsets", b"expect"}
#: The contract's header lines, in order (pgmsg_webhook_headers, migration 028).
CONTRACT = [
    b"user-agent",
    b"webhook-id",
    b"webhook-timestamp",
    b"webhook-signature",
    b"pgmsg-message-id",
    b"pgmsg-delivery-id",
    b"pgmsg-message-type",
    b"pgmsg-client-id",
    b"content-type",
]
#: The contract's lines that change with the send time.
SEND_TIME = {b"webhook-timestamp", b"webhook-signature"}


@dataclass(frozen=True)
class RawRequest:
    request_line: bytes
    header_lines: list[bytes]  # as sent, in order, without the line ends
    body: bytes

    def name_of(self, line: bytes) -> bytes:
        return line.split(b":", 1)[0].strip().lower()

    def lines(self, *, without: set[bytes]) -> list[bytes]:
        return [line for line in self.header_lines if self.name_of(line) not in without]

    def headers(self) -> dict[str, str]:
        return {
            self.name_of(line).decode(): line.split(b":", 1)[1].strip().decode() for line in self.header_lines
        }


class RawReceiver:
    """Accepts HTTP/1.1 POSTs on 127.0.0.1 and keeps each request's bytes; answers 200."""

    def __init__(self) -> None:
        self.requests: list[RawRequest] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/contract/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            request_line, *header_lines = head.split(b"\r\n")
            request = RawRequest(request_line, header_lines, b"")
            length = int(request.headers().get("content-length", "0"))
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            self.requests.append(RawRequest(request_line, header_lines, body))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def raw_receiver() -> Iterator[RawReceiver]:
    receiver = RawReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


def test_in_transaction_push_and_dispatcher_send_the_same_request(
    client: Client, db: psycopg.Connection[Any], dsn: str, raw_receiver: RawReceiver, run_id: str
) -> None:
    with in_transaction_push(dsn, True):
        sub = client.subscribe(
            run_id + "-contract",
            "http",
            message_type=run_id + ".contract",
            webhook_url=raw_receiver.url,
            push_mode="in_transaction",
        )
        # Text a careless encoder would escape differently: the body must still be the same bytes.
        message_id = client.publish(
            run_id + ".contract",
            {"name": 'Zoë "quoted" </tag>', "n": 1.5, "emoji": "\U0001f680", "nested": {"a": [1, None]}},
        )
    [first] = wait_until(lambda: raw_receiver.requests[:1], message="the in-transaction push did not arrive")
    delivery = db.execute(
        "SELECT * FROM message_delivery WHERE message_id = %s AND subscription_id = %s", (message_id, sub.id)
    ).fetchone()
    assert delivery["status"] == "delivered", delivery["last_error"]

    # The same delivery again, now the dispatcher's: due once more, same webhook-id.
    db.execute("UPDATE subscriptions SET push_mode = 'dispatcher' WHERE id = %s", (sub.id,))
    db.execute(
        "UPDATE message_delivery SET status = 'pending', next_attempt_at = now(), delivered_at = NULL "
        "WHERE id = %s",
        (delivery["id"],),
    )
    with running(dsn, name=run_id + "-contract", workers=1, idle_poll_seconds=0.2):
        wait_until(
            lambda: len(raw_receiver.requests) >= 2,
            timeout=30,
            message="the dispatcher's push did not arrive",
        )
    second = raw_receiver.requests[1]

    assert first.request_line == second.request_line == b"POST /contract/hook HTTP/1.1"
    assert first.body == second.body
    assert first.lines(without=TRANSPORT | SEND_TIME) == second.lines(without=TRANSPORT | SEND_TIME)
    # Nothing else: every line is the contract's, or transport the client writes by itself.
    assert [first.name_of(line) for line in first.lines(without=TRANSPORT)] == CONTRACT
    assert [second.name_of(line) for line in second.lines(without=TRANSPORT)] == CONTRACT
    headers = first.headers()
    assert headers["webhook-id"] == f"dlv_{delivery['id']}"
    assert headers["pgmsg-message-id"] == str(message_id)
    assert headers["pgmsg-delivery-id"] == str(delivery["id"])
    assert headers["content-type"] == "application/json"

    # The oracle: both signatures verify with the subscription's secret, both bodies are the envelope.
    secret = db.execute("SELECT signing_secret FROM subscriptions WHERE id = %s", (sub.id,)).fetchone()[
        "signing_secret"
    ]
    for request in (first, second):
        envelope = Webhook(secret).verify(request.body, request.headers())
        assert envelope["id"] == message_id
        assert envelope["payload"]["name"] == 'Zoë "quoted" </tag>'
        assert verified_by_both([secret], request.headers(), request.body) == f"dlv_{delivery['id']}"
        refused_by_both([secret], request.headers(), request.body + b" ")
        moved = str(int(request.headers()["webhook-timestamp"]) + 1)
        refused_by_both([secret], {**request.headers(), "webhook-timestamp": moved}, request.body)


def test_the_cli_test_event_follows_the_same_contract(
    client: Client, db: psycopg.Connection[Any], raw_receiver: RawReceiver, run_id: str
) -> None:
    """`pgmsg subscriptions test` sends the contract's header lines for its fixed test event."""
    sub = client.subscribe(
        run_id + "-probe",
        "http",
        message_type=run_id + ".probe",
        webhook_url=raw_receiver.url,
        push_mode="dispatcher",
    )
    result = send_test_event(client, sub.id)
    assert result.ok, result.error
    [request] = raw_receiver.requests
    assert [request.name_of(line) for line in request.lines(without=TRANSPORT)] == CONTRACT
    secret = db.execute("SELECT signing_secret FROM subscriptions WHERE id = %s", (sub.id,)).fetchone()[
        "signing_secret"
    ]
    event = Webhook(secret).verify(request.body, request.headers())
    assert event["type"] == "pgmsg.test"
    assert request.headers()["pgmsg-message-type"] == "pgmsg.test"
