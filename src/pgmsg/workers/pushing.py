"""One HTTP push of a claimed delivery: the URL policy check, the headers, the POST, the result.

Nothing here touches the database: the dispatcher claims (pgmsg.workers.dispatcher)
and records (pgmsg.workers.recording); a push only turns a claimed row into an
outcome. Every request runs on the dispatcher's event loop (pgmsg.webhook_http).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from pgmsg.errors import PgmsgError
from pgmsg.ssrf import Allowlist, BlockedTarget, check_url
from pgmsg.webhook_http import NoAnswer, WebhookClient


class Pushed(NamedTuple):
    """The outcome of one push, as pgmsg_record_http_attempts takes it."""

    code: int | None  # the HTTP status, None without an answer
    error: str | None  # None for a 2xx
    duration_ms: float
    retry_after: float | None  # seconds, from the answer's Retry-After


def request_headers(row: dict[str, Any]) -> dict[str, str]:
    """The headers of a push of the claimed delivery ``row``, as the claim returned them: the one
    webhook contract (pgmsg_webhook_headers, migration 028), signed in the database."""
    return dict(row["headers"])


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Pusher:
    """Makes pushes on ``loop`` over kept-alive connections; ``resolve`` replaces DNS lookups (tests)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        ca_file: str | None = None,
        resolve: Callable[[str, int], list[str]] | None = None,
    ) -> None:
        self._loop = loop
        self.resolve = resolve
        self._http = WebhookClient(ca_file)

    async def push(self, row: dict[str, Any], allowlist: Allowlist) -> Pushed:
        """POST one claimed delivery (on the loop); the outcome is not recorded here."""
        started = time.monotonic()
        body = row["body"].encode()
        url = row["webhook_url"]
        try:
            addresses = await self._checked_addresses(url, allowlist)
        except (BlockedTarget, PgmsgError) as exc:
            return Pushed(None, f"refused: {exc}", 0.0, None)
        try:
            # To the address just checked, not a new lookup of the name (DNS rebinding).
            answer = await self._http.post(
                url, addresses[0], request_headers(row), body, row["http_timeout_ms"] / 1000.0
            )
        except NoAnswer as exc:
            return Pushed(None, str(exc)[:2000], _ms(started), None)
        duration = _ms(started)
        error = None
        if not 200 <= answer.status < 300:
            error = f"HTTP {answer.status}: {answer.body[:500].decode(errors='replace')}"
        return Pushed(answer.status, error, duration, parse_retry_after(answer.headers.get("retry-after")))

    async def _checked_addresses(self, url: str, allowlist: Allowlist) -> list[str]:
        """check_url, on the loop when the host is an address, in a thread when it needs a lookup."""
        try:
            return check_url(url, allowlist, resolve=_lookup_elsewhere)
        except _NeedsLookup:
            return await self._loop.run_in_executor(
                None, functools.partial(check_url, url, allowlist, resolve=self.resolve)
            )

    def close(self) -> None:
        """Close the kept-alive connections (on the loop)."""
        self._http.close()


class _NeedsLookup(Exception):
    """Raised by _lookup_elsewhere: the URL names a host, whose lookup must not block the loop."""


def _lookup_elsewhere(host: str, port: int) -> list[str]:
    raise _NeedsLookup(host)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
