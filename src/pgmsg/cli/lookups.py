"""Checks that what the operator named exists, so commands fail with a clear NotFound
instead of quietly doing nothing."""

from __future__ import annotations

from typing import Any

import psycopg

from pgmsg.errors import NotFound, translated


def require_client(conn: psycopg.Connection[dict[str, Any]], client_id: str) -> dict[str, int]:
    """How many subscriptions (and active ones) ``client_id`` has; NotFound when none."""
    with translated(f"looking up client {client_id!r}"):
        row = conn.execute(
            "SELECT count(*) AS total, count(*) FILTER (WHERE active) AS active "
            "FROM subscriptions WHERE client_id = %s",
            (client_id,),
        ).fetchone()
    assert row is not None
    if row["total"] == 0:
        raise NotFound(f"no subscription for client {client_id!r}; "
                       "see `pgmsg subscriptions list` for the clients there are")
    return {"total": int(row["total"]), "active": int(row["active"])}


def require_delivery(conn: psycopg.Connection[dict[str, Any]], delivery_id: int) -> dict[str, Any]:
    """One row of message_delivery; NotFound when there is none with that id."""
    with translated(f"reading delivery {delivery_id}"):
        row = conn.execute("SELECT * FROM message_delivery WHERE id = %s", (delivery_id,)).fetchone()
    if row is None:
        raise NotFound(f"no delivery with id {delivery_id}")
    return row
