"""The tests' one webhook endpoint: a real HTTP server on 127.0.0.1 that records every request.

Tests take it from the ``receiver`` fixture (tests/conftest.py), started and answering 200,
stopped afterwards (``receiver.another()`` starts a second one, on another address if need be):

    receiver.status = 503                     # answers 503 from now on
    receiver.script = [Reply(503), Reply(429, {"Retry-After": "1"})]   # these first, in order
    receiver.respond = lambda r: Reply(404 if r.json["payload"].get("gone") else 200)

``respond`` decides each answer from the request (status, headers, body, a delay before
answering); it runs in the request's thread, so state it keeps across requests takes a lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"
    at: float = 0.0  # time.monotonic() when the request arrived

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: a short JSON body saying ok or refused
    delay: float = 0.0  # seconds to wait before answering


@dataclass
class Receiver:
    """Answers requests with the next reply of ``script``, else ``respond(request)``, else
    ``status``; records them in ``requests``."""

    port: int = 0
    status: int = 200
    respond: Callable[[Received], Reply] | None = None
    script: list[Reply] = field(default_factory=list)
    host: str = "127.0.0.1"
    path: str = "/webhook"
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _others: list[Receiver] = field(default_factory=list)

    def another(self, **settings: Any) -> Receiver:
        """A second endpoint, started now and stopped with this one."""
        other = Receiver(**settings).start()
        self._others.append(other)
        return other

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = Received(
                    self.path, dict(self.headers.items()), body, self.command, time.monotonic()
                )
                with receiver.lock:
                    receiver.requests.append(request)
                    scripted = receiver.script.pop(0) if receiver.script else None
                reply = scripted or (
                    receiver.respond(request) if receiver.respond else Reply(receiver.status)
                )
                if reply.delay:
                    time.sleep(reply.delay)
                answer = (
                    reply.body
                    if reply.body is not None
                    else (b'{"ok": true}' if reply.status < 300 else b'{"error": "refused"}')
                )
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for other in self._others:
            other.stop()
        self._others.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.requests
