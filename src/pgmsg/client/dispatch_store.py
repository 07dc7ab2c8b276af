"""The HTTP dispatcher's statements, by name, and the connections they run on.

Every statement the dispatcher sends is here: claiming due deliveries, recording
pushes, giving back unsent claims, releasing orphaned claims, the heartbeat and
the webhook allowlist. Each thread gets a connection of its own (autocommit,
dict rows), replaced when it broke. The rules (retries, backoff, dead letters,
leases) live in SQL; this module only names the calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgmsg.client.connection import DEFAULT_CONNECT_TIMEOUT, with_connect_timeout
from pgmsg.client.subscriptions import BLOCKED_NETWORKS, WEBHOOK_ALLOWLIST
from pgmsg.errors import ConnectionFailed, translated

#: Pause between attempts to reach the database again (see DispatchStore.fetch).
RECONNECT_PAUSE_SECONDS = 0.5

# Claims up to p_batch due deliveries under leases of lease_seconds, per subscription at
# most its limit (max_in_flight, else per_subscription) plus claim_ahead (at most the limit
# again), counting the ones this dispatcher still holds (busy ids and counts); each row
# carries its subscription's limit (migration 032).
CLAIM = (
    "SELECT * FROM pgmsg_claim_http_slots(%(batch)s, %(per_subscription)s, %(name)s, %(lease)s,"
    " %(busy)s::bigint[], %(counts)s::integer[], %(claim_ahead)s)"
)

# Records finished pushes, each under the lease token its claim returned: a push
# whose lease lapsed and passed on (another push, a dead letter) is not recorded
# (status NULL), and neither is one recorded already, so the statement may be
# repeated after a connection lost during a call that committed just before its
# answer was lost.
RECORD = (
    "SELECT delivery_id, status FROM pgmsg_record_http_attempts(%(ids)s::bigint[], %(tokens)s::uuid[],"
    " %(codes)s::integer[], %(errors)s::text[], %(durations)s::numeric[], %(retry_after)s::float8[])"
)

# Gives back deliveries claimed but never requested, as if never claimed (the
# attempt undone), where this dispatcher still holds their lease.
GIVE_BACK = (
    "UPDATE message_delivery d SET status = 'pending', attempts = d.attempts - 1, lease_expires_at = NULL,"
    " lease_token = NULL, updated_at = now()"
    " FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS g(id, token)"
    " WHERE d.id = g.id AND d.status = 'processing' AND d.lease_token = g.token RETURNING d.id"
)

# Gives back what is claimed under a dispatcher's name but not among the ids it is
# pushing: claims whose rows never reached it (the connection broke mid-claim).
RELEASE_ORPHANS = (
    "UPDATE message_delivery SET status = 'pending', attempts = attempts - 1,"
    " lease_expires_at = NULL, lease_token = NULL, updated_at = now()"
    " WHERE delivery_mode = 'http' AND status = 'processing' AND claimed_by = %(name)s"
    " AND NOT (id = ANY(%(inflight)s::bigint[])) RETURNING id"
)

# The dispatcher's row in pgmsg_dispatchers: alive, and how many pushes it recorded.
HEARTBEAT = (
    "INSERT INTO pgmsg_dispatchers (name, pushed) VALUES (%s, %s) "
    "ON CONFLICT (name) DO UPDATE SET last_seen = now(), pushed = EXCLUDED.pushed"
)


class DispatchStore:
    """The dispatcher's statements on one connection per thread."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = with_connect_timeout(conninfo, DEFAULT_CONNECT_TIMEOUT)
        self._local = threading.local()

    def connection(self) -> psycopg.Connection[Any]:
        """This thread's connection, replaced when it broke."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self.conninfo, autocommit=True, row_factory=dict_row)
            self._local.conn = conn
        return conn

    def forget_connection(self) -> None:
        """Drop this thread's connection (closing it), so the next statement opens a new one."""
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None:
            conn.close()

    def fetch(
        self, action: str, query: str, params: Any = None, *, retry_until: float = 0.0
    ) -> list[dict[str, Any]]:
        """Run one statement on this thread's connection and return its rows.

        A connection can die while its thread is idle (the database restarted),
        which only shows when it is next used: it is then replaced and the
        statement tried again at once, and after that every
        RECONNECT_PAUSE_SECONDS until ``retry_until`` (time.monotonic()) while
        the database is still unreachable; then ConnectionFailed is raised. A
        statement run here must be safe to apply twice (a call may commit just
        before its answer is lost): reads are, and records and give-backs are
        through the lease tokens they name.
        """
        retries = 0
        while True:
            try:
                with translated(action):
                    return self.connection().execute(query, params).fetchall()
            except ConnectionFailed:
                self.forget_connection()
                retries += 1
                if retries > 1:
                    if time.monotonic() + RECONNECT_PAUSE_SECONDS > retry_until:
                        raise
                    time.sleep(RECONNECT_PAUSE_SECONDS)

    def claim(
        self,
        name: str,
        batch: int,
        per_subscription: int,
        claim_ahead: int,
        lease_seconds: int,
        busy: dict[int, int],
    ) -> list[dict[str, Any]]:
        """Claim due deliveries for dispatcher ``name``; ``busy``: subscription -> claims it holds."""
        params = {
            "batch": batch,
            "per_subscription": per_subscription,
            "name": name,
            "lease": lease_seconds,
            "busy": list(busy),
            "counts": list(busy.values()),
            "claim_ahead": claim_ahead,
        }
        with translated("claiming HTTP deliveries"):
            return self.connection().execute(CLAIM, params).fetchall()

    def record(
        self,
        action: str,
        ids: Sequence[int],
        tokens: Sequence[Any],
        codes: Sequence[int | None],
        errors: Sequence[str | None],
        durations: Sequence[float],
        retry_after: Sequence[float | None],
        *,
        retry_until: float,
    ) -> dict[int, str | None]:
        """Record pushes; returns each delivery's new status, None where its lease had passed on."""
        params = {
            "ids": list(ids),
            "tokens": list(tokens),
            "codes": list(codes),
            "errors": list(errors),
            "durations": list(durations),
            "retry_after": list(retry_after),
        }
        rows = self.fetch(action, RECORD, params, retry_until=retry_until)
        return {r["delivery_id"]: r["status"] for r in rows}

    def give_back(self, ids: Sequence[int], tokens: Sequence[Any], *, retry_until: float) -> list[int]:
        """Give back claimed, unsent deliveries still held under ``tokens``; returns their ids."""
        rows = self.fetch(
            f"giving back {len(ids)} unsent deliveries",
            GIVE_BACK,
            {"ids": list(ids), "tokens": list(tokens)},
            retry_until=retry_until,
        )
        return [r["id"] for r in rows]

    def release_orphans(self, name: str, inflight: Sequence[int]) -> list[int]:
        """Give back what ``name`` holds beyond ``inflight`` (see RELEASE_ORPHANS); returns the ids."""
        rows = self.fetch(
            "releasing orphaned claims", RELEASE_ORPHANS, {"name": name, "inflight": list(inflight)}
        )
        return [r["id"] for r in rows]

    def heartbeat(self, name: str, pushed: int) -> None:
        with translated("reporting the dispatcher's heartbeat"):
            self.connection().execute(HEARTBEAT, (name, pushed))

    def allowlist_entries(self) -> list[str]:
        """The webhook allowlist's entries as the database holds them."""
        return [row["entry"] for row in self.fetch("reading the webhook allowlist", WEBHOOK_ALLOWLIST)]

    def blocked_networks(self) -> list[tuple[str, str]]:
        """(network, reason) of each network no webhook may reach, whatever the allowlist says."""
        return [
            (row["network"], row["reason"])
            for row in self.fetch("reading the blocked networks", BLOCKED_NETWORKS)
        ]
