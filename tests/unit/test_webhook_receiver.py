"""The sample webhook receiver, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from pgmsg.errors import InvalidInput
from pgmsg.logs import JsonFormatter
from pgmsg.signing import signature_headers
from pgmsg.webhook_receiver import WebhookReceiver
from tests.support.signatures import oracle_headers, refused_by_both, verified_by_both

OLD = "whsec_" + base64.b64encode(bytes(range(32))).decode()
NEW = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
EVENT = {"type": "order.created", "data": {"order": 42}}

# No proxy: an http_proxy in the environment must not route test traffic off this host.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def events() -> list[tuple[str, dict]]:
    return []


@pytest.fixture
def receiver(events: list[tuple[str, dict]]) -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(
        [NEW, OLD], "127.0.0.1", 0, on_event=lambda wid, body: events.append((wid, body))
    ).start()
    assert r.url.startswith("http://127.0.0.1:") and r.port != 0
    yield r
    r.stop()


def _send(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> tuple[int, dict[str, Any]]:
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(
        url, data=body if method == "POST" else None, headers=headers, method=method
    )
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _signed(secrets: list[str], msg_id: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", **signature_headers(secrets, msg_id, body, ts)}


def test_valid_signed_post_is_accepted_and_recorded(
    receiver: WebhookReceiver, events: list[tuple[str, dict]]
) -> None:
    body = json.dumps(EVENT).encode()
    headers = _signed([NEW], "msg_ok", body)
    assert verified_by_both([NEW], headers, body) == "msg_ok"  # the oracle agrees it is signed
    status, answer = _send(receiver.url, body, headers)
    assert (status, answer) == (200, {"ok": True})
    assert receiver.accepted == [{"webhook_id": "msg_ok", "body": EVENT}]
    assert events == [("msg_ok", EVENT)]
    assert receiver.counters["accepted"] == 1 and receiver.rejected == []


def test_a_post_signed_by_standardwebhooks_is_accepted(
    receiver: WebhookReceiver, events: list[tuple[str, dict]]
) -> None:
    """Another implementation's signature (the reference library's, with either secret of a
    rotation) passes the sample receiver: it speaks the standard, not only pgmsg's signer."""
    body = json.dumps(EVENT).encode()
    for secrets, msg_id in (([NEW], "msg_sw_new"), ([OLD], "msg_sw_old"), ([OLD, NEW], "msg_sw_both")):
        headers = {
            "Content-Type": "application/json",
            **oracle_headers(secrets, msg_id, body, int(time.time())),
        }
        assert _send(receiver.url, body, headers) == (200, {"ok": True}), msg_id
    assert [wid for wid, _ in events] == ["msg_sw_new", "msg_sw_old", "msg_sw_both"]


def test_tampered_body_is_refused(receiver: WebhookReceiver, events: list[tuple[str, dict]]) -> None:
    body = json.dumps(EVENT).encode()
    headers = _signed([NEW], "msg_tampered", body)
    forged = json.dumps({**EVENT, "data": {"order": 43}}).encode()
    refused_by_both([NEW, OLD], headers, forged)
    status, answer = _send(receiver.url, forged, headers)
    assert status == 401 and "no valid signature" in answer["error"]
    assert events == [] and receiver.accepted == []
    assert receiver.rejected[0]["reason"] == answer["error"]
    assert receiver.counters["rejected"] == 1


def test_missing_signature_is_refused(receiver: WebhookReceiver) -> None:
    body = json.dumps(EVENT).encode()
    headers = _signed([NEW], "msg_unsigned", body)
    del headers["webhook-signature"]
    status, answer = _send(receiver.url, body, headers)
    assert (status, answer) == (401, {"error": "missing webhook-signature header"})
    assert receiver.accepted == []
    recorded = {k.lower(): v for k, v in receiver.rejected[0]["headers"].items()}
    assert recorded["webhook-id"] == "msg_unsigned"


def test_stale_timestamp_is_refused(receiver: WebhookReceiver) -> None:
    body = json.dumps(EVENT).encode()
    headers = _signed([NEW], "msg_stale", body, ts=int(time.time()) - 3600)
    refused_by_both([NEW], headers, body)
    status, answer = _send(receiver.url, body, headers)
    assert status == 401 and "stale" in answer["error"]
    assert receiver.accepted == []


def test_replay_is_answered_as_duplicate_and_handled_once(
    receiver: WebhookReceiver, events: list[tuple[str, dict]]
) -> None:
    body = json.dumps(EVENT).encode()
    headers = _signed([NEW], "msg_replay", body)
    assert _send(receiver.url, body, headers) == (200, {"ok": True})
    assert _send(receiver.url, body, headers) == (200, {"duplicate": True})
    assert events == [("msg_replay", EVENT)]
    assert len(receiver.accepted) == 1
    assert receiver.counters["duplicate"] == 1


def test_rotated_secrets_are_accepted(receiver: WebhookReceiver, events: list[tuple[str, dict]]) -> None:
    body = json.dumps(EVENT).encode()
    assert _send(receiver.url, body, _signed([OLD], "msg_old", body))[0] == 200
    assert _send(receiver.url, body, _signed([OLD, NEW], "msg_both", body))[0] == 200
    assert [wid for wid, _ in events] == ["msg_old", "msg_both"]


def test_unknown_secret_is_refused(receiver: WebhookReceiver) -> None:
    other = "whsec_" + base64.b64encode(b"z" * 32).decode()
    body = json.dumps(EVENT).encode()
    refused_by_both([NEW, OLD], _signed([other], "msg_other", body), body)
    assert _send(receiver.url, body, _signed([other], "msg_other", body))[0] == 401


def test_tampered_timestamp_is_refused(receiver: WebhookReceiver) -> None:
    """A replay with a fresh timestamp under the old signature fails both judges and the receiver."""
    body = json.dumps(EVENT).encode()
    headers = _signed([NEW], "msg_ts", body, ts=int(time.time()) - 60)
    moved = {**headers, "webhook-timestamp": str(int(time.time()))}
    refused_by_both([NEW, OLD], moved, body)
    status, answer = _send(receiver.url, body, moved)
    assert status == 401 and "no valid signature" in answer["error"]


def test_signed_body_that_is_not_json_is_a_bad_request(
    receiver: WebhookReceiver, events: list[tuple[str, dict]]
) -> None:
    body = b"not json"
    status, answer = _send(receiver.url, body, _signed([NEW], "msg_text", body))
    assert (status, answer) == (400, {"error": "body is not valid JSON"})
    assert events == []


def test_failing_handler_gets_500_and_the_retry_is_processed() -> None:
    calls: list[str] = []

    def flaky(webhook_id: str, body: dict) -> None:
        calls.append(webhook_id)
        if len(calls) == 1:
            raise RuntimeError("downstream unavailable")

    with WebhookReceiver([NEW], on_event=flaky) as r:
        body = json.dumps(EVENT).encode()
        headers = _signed([NEW], "msg_retry", body)
        assert _send(r.url, body, headers)[0] == 500
        assert _send(r.url, body, headers) == (200, {"ok": True})
    assert calls == ["msg_retry", "msg_retry"]


def test_healthz(receiver: WebhookReceiver) -> None:
    url = receiver.url.replace("/webhook", "/healthz")
    assert _send(url, b"", {}, method="GET") == (200, {"status": "ok"})


def test_bad_secret_fails_at_construction() -> None:
    with pytest.raises(InvalidInput, match="not valid base64"):
        WebhookReceiver(["whsec_???"])


def test_log_lines_are_json(caplog: pytest.LogCaptureFixture, receiver: WebhookReceiver) -> None:
    body = json.dumps(EVENT).encode()
    with caplog.at_level("INFO", logger="pgmsg.webhook_receiver"):
        _send(receiver.url, body, {"Content-Type": "application/json"})
    lines = [JsonFormatter().format(rec) for rec in caplog.records if rec.msg == "webhook rejected"]
    assert lines
    entry = json.loads(lines[0])
    assert entry["level"] == "warning" and entry["status"] == 401
    assert entry["reason"] == "missing webhook-id header"


def test_many_connections_opened_at_once_are_all_accepted_first_time(receiver: WebhookReceiver) -> None:
    """A dispatcher opens its connections together (16 by default). socketserver's listen
    backlog of 5 overflowed: the kernel dropped the connection attempts beyond it and the
    client's kernel sent them again a second later (counted in TCP_INFO's total_retrans)."""
    import selectors
    import socket
    import struct

    sockets = []
    with selectors.DefaultSelector() as selector:
        for _ in range(64):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", receiver.port))
            selector.register(s, selectors.EVENT_WRITE)
            sockets.append(s)
        pending = set(sockets)
        while pending:
            ready = selector.select(timeout=10)
            assert ready, f"{len(pending)} connections not established"
            for key, _ in ready:
                selector.unregister(key.fileobj)
                pending.discard(key.fileobj)
    try:
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for s in sockets)
        # struct tcp_info: 8 one-byte fields, then 32-bit ones; total_retrans is the 24th.
        retransmitted = [
            struct.unpack_from("I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 100)[0]
            for s in sockets
        ]
        assert sum(retransmitted) == 0, retransmitted
    finally:
        for s in sockets:
            s.close()


# -- the request head, parsed by the receiver itself (not the email package) ------


def _raw(
    receiver: WebhookReceiver, data: bytes, answers: int = 1
) -> tuple[list[tuple[int, dict[str, str], bytes]], bool]:
    """Send raw bytes on one connection; return the parsed answers and whether the server closed it."""
    import socket

    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as s:
        s.sendall(data)
        buffered, parsed, closed = b"", [], False
        while len(parsed) < answers:
            while b"\r\n\r\n" not in buffered:
                chunk = s.recv(65536)
                if not chunk:
                    return parsed, True
                buffered += chunk
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            length = int(headers["content-length"])
            while len(buffered) < length:
                chunk = s.recv(65536)
                assert chunk, "connection closed mid-answer"
                buffered += chunk
            parsed.append((int(status_line.split()[1]), headers, buffered[:length]))
            buffered = buffered[length:]
        s.settimeout(0.5)
        try:
            closed = s.recv(1) == b""
        except TimeoutError:
            closed = False
    return parsed, closed


def _post_bytes(body: bytes, headers: dict[str, str], version: str = "HTTP/1.1") -> bytes:
    lines = [
        f"POST /webhook {version}",
        "Host: 127.0.0.1",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_kept_alive_connection_carries_pipelined_webhooks(
    receiver: WebhookReceiver, events: list[tuple[str, dict]]
) -> None:
    """Two webhooks written back to back on one connection (lower-case header names) are
    both verified and answered in order, and the connection stays open."""
    body = json.dumps(EVENT).encode()
    data = b"".join(
        _post_bytes(body, {k.lower(): v for k, v in _signed([NEW], f"msg_pipe_{i}", body).items()})
        for i in range(2)
    )
    answers, closed = _raw(receiver, data, answers=2)
    assert [(status, json.loads(payload)) for status, _, payload in answers] == [(200, {"ok": True})] * 2
    assert answers[0][1]["content-type"] == "application/json" and "date" in answers[0][1]
    assert "connection" not in answers[0][1] and not closed
    assert [wid for wid, _ in events] == ["msg_pipe_0", "msg_pipe_1"]


def test_http_1_0_request_is_answered_and_closed(receiver: WebhookReceiver) -> None:
    body = json.dumps(EVENT).encode()
    answers, closed = _raw(receiver, _post_bytes(body, _signed([NEW], "msg_10", body), "HTTP/1.0"))
    assert answers[0][0] == 200 and answers[0][1]["connection"] == "close" and closed


def test_connection_close_is_honoured(receiver: WebhookReceiver) -> None:
    body = json.dumps(EVENT).encode()
    answers, closed = _raw(
        receiver, _post_bytes(body, {**_signed([NEW], "msg_cl", body), "Connection": "close"})
    )
    assert answers[0][0] == 200 and answers[0][1]["connection"] == "close" and closed


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST /webhook\r\n\r\n", 400),  # no version
        (b"POST /webhook HTTP/2.0\r\ncontent-length: 0\r\n\r\n", 505),
        (b"POST /webhook XTTP/1.1\r\ncontent-length: 0\r\n\r\n", 400),
        (b"POST /webhook HTTP/1.1\r\nwebhook-id: a\r\n  folded\r\n\r\n", 400),
        (b"POST /webhook HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"POST /webhook HTTP/1.1\r\ncontent-length : 2\r\n\r\n{}", 400),
        (b"POST /webhook HTTP/1.1\r\ncontent-length: 2\r\nContent-Length: 30\r\n\r\n{}", 400),
        (b"POST /webhook HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 501),
        (b"POST /webhook HTTP/1.1\r\ncontent-length: +2\r\n\r\n{}", 400),
        (b"POST /webhook HTTP/1.1\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(101)) + b"\r\n", 431),
        (b"POST /webhook HTTP/1.1\r\nx-long: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"PUT /webhook HTTP/1.1\r\ncontent-length: 0\r\n\r\n", 501),
        (
            b"POST /webhook HTTP/1.1\r\ncontent-length: " + b"9" * 5000 + b"\r\n\r\n",
            400,
        ),  # beyond int()'s digits
        (b"POST /webhook HTTP/1.1\r\ncontent-length: \x0c2\r\n\r\n{}", 400),  # not a blank to HTTP
        (b"POST /webhook HTTP/1.1\r\nx-a: 1\rx-b: 2\r\n\r\n", 400),  # a bare CR inside a line
        (b"POST /webhook HTTP/1.1\r\nx(a): 1\r\n\r\n", 400),  # not a token
        (b"POST  /webhook HTTP/1.1\r\n\r\n", 400),  # two spaces
    ],
)
def test_malformed_request_heads_are_refused_and_closed(
    receiver: WebhookReceiver, head: bytes, status: int
) -> None:
    """Each gets its own error status and a closed connection; nothing reaches the handler,
    and the receiver goes on serving."""
    answers, closed = _raw(receiver, head)
    assert answers and answers[0][0] == status, answers
    assert closed
    assert receiver.accepted == []
    body = json.dumps(EVENT).encode()
    assert _send(receiver.url, body, _signed([NEW], "msg_after", body)) == (200, {"ok": True})


def test_client_leaving_mid_body_is_not_handled(receiver: WebhookReceiver) -> None:
    """A connection closed before its Content-Length was read is dropped, not verified."""
    import socket

    body = json.dumps(EVENT).encode()
    data = _post_bytes(body, _signed([NEW], "msg_cut", body))
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as s:
        s.sendall(data[:-5])
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1024) == b""  # the receiver is done with it: closed, nothing answered
    body2 = json.dumps(EVENT).encode()
    assert _send(receiver.url, body2, _signed([NEW], "msg_whole", body2)) == (200, {"ok": True})
    assert [a["webhook_id"] for a in receiver.accepted] == ["msg_whole"]
    # A truncated body is not even checked (it would fail as a bad signature).
    assert receiver.rejected == []


# -- https ------------------------------------------------------------------------------


def test_receiver_serves_https_with_the_given_certificate(tmp_path: Any) -> None:
    """Verified webhooks over TLS; a client that does not trust the CA is refused in the
    handshake and the receiver goes on serving."""
    import socket
    import ssl

    from pgmsg.webhook_http import NoAnswer, post_once
    from tests.support.tls import make_certificates

    certs = make_certificates(tmp_path)
    with WebhookReceiver(
        [NEW], tls_cert=f"{certs['localhost']}.pem", tls_key=f"{certs['localhost']}.key"
    ) as r:
        assert r.url.startswith("https://127.0.0.1:")
        url = r.url.replace("127.0.0.1", "localhost")
        body = json.dumps(EVENT).encode()
        with pytest.raises(NoAnswer, match="CERTIFICATE_VERIFY_FAILED"):
            post_once(url, "127.0.0.1", _signed([NEW], "msg_untrusted", body), body, 5)
        answer = post_once(
            url, "127.0.0.1", _signed([NEW], "msg_tls", body), body, 5, ca_file=str(certs["ca"])
        )
        assert (answer.status, json.loads(answer.body)) == (200, {"ok": True})
        assert [a["webhook_id"] for a in r.accepted] == ["msg_tls"]
        # A name the certificate is not for is refused in the handshake.
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as raw, pytest.raises(ssl.SSLError):
            ssl.create_default_context(cafile=str(certs["ca"])).wrap_socket(
                raw, server_hostname="elsewhere.example"
            )
        assert r.counters["accepted"] == 1 and r.rejected == []


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        (None, "x.key", "a TLS key was given without its certificate"),
        ("/nonexistent.pem", None, "cannot load the TLS certificate '/nonexistent.pem'"),
    ],
)
def test_bad_tls_settings_fail_at_construction(cert: str | None, key: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        WebhookReceiver([NEW], tls_cert=cert, tls_key=key)


def test_get_with_a_body_is_answered_then_closed(receiver: WebhookReceiver) -> None:
    """A GET's body is not read, so it must not be taken for a second request on the connection."""
    body = json.dumps(EVENT).encode()
    inner = _post_bytes(body, _signed([NEW], "msg_smuggled", body))
    head = f"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: {len(inner)}\r\n\r\n".encode()
    answers, closed = _raw(receiver, head + inner, answers=2)
    assert [status for status, _, _ in answers] == [200] and closed
    assert receiver.accepted == []


def test_expect_100_continue_is_answered_before_the_body_is_sent(receiver: WebhookReceiver) -> None:
    import socket

    body = json.dumps(EVENT).encode()
    head, _, _ = _post_bytes(body, {**_signed([NEW], "msg_100", body), "Expect": "100-continue"}).partition(
        b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as s:
        s.sendall(head + b"\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 100 ")  # within the timeout, before any body
        s.sendall(body)
        assert b" 200 " in s.recv(4096).split(b"\r\n", 1)[0]
    assert [a["webhook_id"] for a in receiver.accepted] == ["msg_100"]


def test_empty_line_before_the_request_is_ignored(receiver: WebhookReceiver) -> None:
    body = json.dumps(EVENT).encode()
    answers, _ = _raw(receiver, b"\r\n" + _post_bytes(body, _signed([NEW], "msg_blank", body)))
    assert answers[0][0] == 200
