"""A consumer process killed with SIGKILL in the middle of a batch: its claimed deliveries stay
invisible until their lease lapses, then another consumer gets exactly those and completes them."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgmsg import Client
from tests.support.waiting import wait_until

LEASE_SECONDS = 3

# The doomed consumer: claim a batch, say what it claimed, then "process" it for an hour.
DOOMED = textwrap.dedent("""
    import json, os, sys, time
    from pgmsg import Client

    with Client(os.environ["PGMSG_DSN"], max_size=1) as client:
        batch = client.claim(sys.argv[1], int(sys.argv[2]), consumer="doomed")
        print(json.dumps([{"id": d.id, "attempts": d.attempts, "lease": d.lease_expires_at.isoformat()}
                          for d in batch]), flush=True)
        time.sleep(3600)
""")


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next line the process prints, or fail after ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"the consumer process printed nothing within {timeout} s"
    return proc.stdout.readline()


def rows(dsn: str, ids: list[int]) -> dict[int, dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        found = conn.execute(
            "SELECT id, status, attempts, retry_count, claimed_by, claimed_at, lease_expires_at, delivered_at "
            "FROM message_delivery WHERE id = ANY(%s)",
            (ids,),
        ).fetchall()
    return {r["id"]: r for r in found}


def test_killed_consumer_batch_is_completed_by_another(client: Client, dsn: str, run_id: str) -> None:
    consumer = run_id + "-batch"
    client.subscribe(consumer, "async", message_type=run_id + ".*", lease_seconds=LEASE_SECONDS)
    message_ids = client.publish_many([(run_id + ".job", {"n": i}, "default") for i in range(8)])

    # A separate process claims the first five (id order) and is killed before acking any.
    proc = subprocess.Popen(
        [sys.executable, "-c", DOOMED, consumer, "5"],
        env={**os.environ, "PGMSG_DSN": dsn},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        claimed = json.loads(read_line(proc, timeout=30))
    finally:
        proc.kill()  # SIGKILL: no ack, no nack, no clean disconnect
        proc.wait(timeout=10)
    assert proc.returncode == -9
    doomed_ids = sorted(d["id"] for d in claimed)
    lease_end = min(datetime.fromisoformat(d["lease"]) for d in claimed)

    # While the lease holds, another consumer gets only the three nobody claimed. The claim and
    # the lease check share one transaction (one now()), so "before the lease lapsed" is exact.
    with psycopg.connect(dsn, row_factory=dict_row) as conn, conn.transaction():
        still_leased = conn.execute("SELECT now() < %s AS leased", (lease_end,)).fetchone()["leased"]
        early = conn.execute("SELECT * FROM pgmsg_claim(%s, 10, 'survivor')", (consumer,)).fetchall()
    assert still_leased, "the test was too slow to claim within the lease; nothing was checked"
    assert len(doomed_ids) == 5 and {d["attempts"] for d in claimed} == {1}
    before = rows(dsn, doomed_ids)
    assert {(r["status"], r["claimed_by"]) for r in before.values()} == {("processing", "doomed")}
    others = sorted(r["delivery_id"] for r in early)
    tokens = {r["delivery_id"]: r["lease_token"] for r in early}
    assert not set(others) & set(doomed_ids)
    assert len(others) == 3
    assert client.ack((i, tokens[i]) for i in others) == 3

    # After the lease, the survivor gets exactly the killed consumer's batch, one attempt more.
    again = wait_until(lambda: client.claim(consumer, 10, consumer="survivor"), timeout=LEASE_SECONDS + 30)
    assert sorted(d.id for d in again) == doomed_ids
    assert {d.attempts for d in again} == {2}
    assert client.claim(consumer, 10, consumer="survivor") == []
    assert client.ack(d for d in again) == 5

    after = rows(dsn, doomed_ids)
    for delivery_id, row in after.items():
        assert row["status"] == "delivered" and row["claimed_by"] == "survivor"
        assert row["attempts"] == before[delivery_id]["attempts"] + 1 == 2
        assert row["retry_count"] == 1  # the lapsed lease counted once
        assert row["claimed_at"] >= before[delivery_id]["lease_expires_at"]  # not before it lapsed
    with psycopg.connect(dsn, autocommit=True) as conn:
        statuses = conn.execute(
            "SELECT message_id, status FROM message_delivery WHERE client_id = %s", (consumer,)
        ).fetchall()
    assert sorted(statuses) == [(m, "delivered") for m in sorted(message_ids)]
