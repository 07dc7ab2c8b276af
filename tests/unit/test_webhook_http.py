"""pgmsg.webhook_http against real sockets on 127.0.0.1: servers that answer with
exactly the bytes each test scripts (keep-alive, chunked, close-delimited,
interim answers, hangs), and a TLS server with a certificate from a CA made by
openssl for the test."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgmsg.webhook_http import MAX_KEPT_BODY, NoAnswer, WebhookClient, post_once
from tests.support.tls import make_certificates

Handler = Callable[[socket.socket, bytes], bytes | None]  # (connection, request) -> answer, None: hang up


def read_request(conn: socket.socket) -> bytes:
    """One whole request (head and Content-Length body), or b"" when the client hung up."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return data


class Scripted:
    """A server on 127.0.0.1 that answers every request with handler(conn, request)."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler, self.tls = handler, tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            while request := read_request(conn):
                self.requests.append(request)
                answer = self.handler(conn, request)
                if answer is None:
                    break
                conn.sendall(answer)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def start(handler: Handler, tls: ssl.SSLContext | None = None) -> Scripted:
        servers.append(Scripted(handler, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ok(body: bytes = b"ok", extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def post(
    server: Scripted,
    path: str = "/hook",
    timeout: float = 5.0,
    client: WebhookClient | None = None,
    headers: dict[str, str] | None = None,
) -> object:
    url = f"http://127.0.0.1:{server.port}{path}"
    if client is None:
        return post_once(url, "127.0.0.1", headers or {"X-Test": "1"}, b'{"a":1}', timeout)
    return asyncio.run(client.post(url, "127.0.0.1", headers or {"X-Test": "1"}, b'{"a":1}', timeout))


def test_request_is_sent_whole_and_the_answer_read(serve: Callable[..., Scripted]) -> None:
    server = serve(lambda conn, req: ok(b"accepted", "Retry-After: 7\r\nX-Dup: 1\r\nX-Dup: 2\r\n"))
    answer = post(server, "/hook?x=1", headers={"webhook-id": "dlv_1", "Content-Type": "application/json"})
    assert answer.status == 200 and answer.body == b"accepted"
    assert answer.headers["retry-after"] == "7" and answer.headers["x-dup"] == "2"
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Content-Length: 7" in lines and b"webhook-id: dlv_1" in lines and body == b'{"a":1}'


def test_connections_are_kept_alive_and_replaced_when_the_server_closed_them(
    serve: Callable[..., Scripted],
) -> None:

    server = serve(lambda conn, req: ok())
    closing = serve(lambda conn, req: ok(extra="Connection: close\r\n"))
    client = WebhookClient()

    async def five(target: Scripted) -> list[int]:
        return [
            (await client.post(f"http://127.0.0.1:{target.port}/", "127.0.0.1", {}, b"x", 5)).status
            for _ in range(5)
        ]

    async def scenario() -> None:
        assert await five(server) == [200] * 5
        assert server.connections == 1  # one connection carried all five
        assert await five(closing) == [200] * 5
        assert closing.connections == 5  # "Connection: close" is honoured
        # A request the server hangs up on has no answer; the next one gets a new connection.
        server.handler = lambda conn, req: None
        with pytest.raises(NoAnswer, match="RemoteDisconnected"):
            await client.post(f"http://127.0.0.1:{server.port}/", "127.0.0.1", {}, b"x", 5)
        server.handler = lambda conn, req: ok()
        assert (await client.post(f"http://127.0.0.1:{server.port}/", "127.0.0.1", {}, b"x", 5)).status == 200
        assert server.connections == 2
        client.close()

    asyncio.run(scenario())


def test_idle_connection_closed_by_the_server_is_not_reused(serve: Callable[..., Scripted]) -> None:

    def answer_then_hang_up_later(conn: socket.socket, req: bytes) -> bytes:
        threading.Timer(0.2, lambda: conn.shutdown(socket.SHUT_RDWR)).start()
        return ok()

    server = serve(answer_then_hang_up_later)
    client = WebhookClient()

    async def scenario() -> list[int]:
        statuses = []
        for _ in range(3):
            statuses.append(
                (await client.post(f"http://127.0.0.1:{server.port}/", "127.0.0.1", {}, b"x", 5)).status
            )
            await asyncio.sleep(0.5)  # the server has closed it meanwhile
        client.close()
        return statuses

    assert asyncio.run(scenario()) == [200, 200, 200]
    assert server.connections == 3


def test_chunked_close_delimited_and_interim_answers(serve: Callable[..., Scripted]) -> None:
    chunked = serve(
        lambda conn, req: (
            b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;ext=1\r\nbusy\r\n7\r\n, sorry\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
    )
    answer = post(chunked)
    assert (answer.status, answer.body) == (503, b"busy, sorry")

    close_delimited = serve(
        lambda conn, req: (conn.sendall(b"HTTP/1.0 410 Gone\r\n\r\nno such hook"), None)[1]
    )
    answer = post(close_delimited)
    assert (answer.status, answer.body) == (410, b"no such hook")

    interim = serve(lambda conn, req: b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"fine"))
    answer = post(interim)
    assert (answer.status, answer.body) == (200, b"fine")

    empty = serve(lambda conn, req: b"HTTP/1.1 204 No Content\r\n\r\n")
    assert post(empty).status == 204


def test_long_answers_are_cut_and_their_connection_not_reused(serve: Callable[..., Scripted]) -> None:

    big = b"x" * (MAX_KEPT_BODY * 3)
    server = serve(lambda conn, req: ok(big))
    client = WebhookClient()

    async def twice() -> list[int]:
        return [
            len((await client.post(f"http://127.0.0.1:{server.port}/", "127.0.0.1", {}, b"x", 5)).body)
            for _ in range(2)
        ]

    assert asyncio.run(twice()) == [MAX_KEPT_BODY, MAX_KEPT_BODY]
    assert server.connections == 2
    client.close()


def test_no_answer_says_why(serve: Callable[..., Scripted]) -> None:
    hanging = serve(lambda conn, req: (time.sleep(3), None)[1])
    started = time.monotonic()
    with pytest.raises(NoAnswer, match=r"^TimeoutError: no complete answer within 0.5 s$"):
        post(hanging, timeout=0.5)
    assert time.monotonic() - started < 2.5  # the timeout bounds the whole request

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NoAnswer, match=rf"^ConnectionRefusedError: Connection refused \(127.0.0.1:{port}\)$"):
        post_once(f"http://127.0.0.1:{port}/", "127.0.0.1", {}, b"x", 5)

    garbage = serve(lambda conn, req: b"SMTP ready\r\n\r\n")
    with pytest.raises(NoAnswer, match="ProtocolError: not an HTTP/1 status line"):
        post(garbage)
    truncated = serve(
        lambda conn, req: (conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), None)[1]
    )
    with pytest.raises(NoAnswer, match="RemoteDisconnected"):
        post(truncated)


def test_header_injection_and_bad_paths_are_refused_before_connecting(serve: Callable[..., Scripted]) -> None:
    server = serve(lambda conn, req: ok())
    with pytest.raises(NoAnswer, match="line break"):
        post(server, headers={"pgmsg-message-type": "a\r\nX-Injected: 1"})
    with pytest.raises(NoAnswer, match="percent-encode"):
        post(server, path="/a b")
    with pytest.raises(NoAnswer, match="only http and https"):
        post_once("ftp://127.0.0.1/", "127.0.0.1", {}, b"x", 5)
    assert server.connections == 0


# -- TLS ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, and a certificate it signed for "localhost" (and, apart, one for another name)."""
    return make_certificates(tmp_path_factory.mktemp("tls"), ("localhost", "elsewhere.example"))


def tls_server(serve: Callable[..., Scripted], certs: dict[str, Path], name: str) -> Scripted:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(f"{certs[name]}.pem", f"{certs[name]}.key")
    seen: list[str | None] = []
    context.sni_callback = lambda sock, server_name, ctx: seen.append(server_name)
    server = serve(lambda conn, req: ok(b"tls ok"), tls=context)
    server.sni = seen  # type: ignore[attr-defined]
    return server


def test_https_connects_to_the_checked_address_and_verifies_the_name(
    serve: Callable[..., Scripted], certificates: dict[str, Path]
) -> None:
    server = tls_server(serve, certificates, "localhost")
    url = f"https://localhost:{server.port}/hook"
    answer = post_once(url, "127.0.0.1", {}, b"x", 5, ca_file=str(certificates["ca"]))
    assert (answer.status, answer.body) == (200, b"tls ok")
    assert server.sni == ["localhost"]  # SNI names the host, the connection went to the address
    assert f"Host: localhost:{server.port}".encode() in server.requests[0]

    with pytest.raises(NoAnswer, match="CERTIFICATE_VERIFY_FAILED"):  # a CA the system does not trust
        post_once(url, "127.0.0.1", {}, b"x", 5)

    other = tls_server(serve, certificates, "elsewhere.example")
    with pytest.raises(NoAnswer, match="CERTIFICATE_VERIFY_FAILED.*(Hostname mismatch|localhost)"):
        post_once(
            f"https://localhost:{other.port}/hook", "127.0.0.1", {}, b"x", 5, ca_file=str(certificates["ca"])
        )
