"""Retention throughput: how fast the housekeeping jobs retire rows, and how long each of their
transactions lasts. Run against a scratch database (it creates and retires its own rows):

    python -m bench.retention "host=127.0.0.1 port=25508 user=postgres dbname=messaging password=..." [messages]

BENCH_RETENTION_BATCH sets the archive and expiry batch (default 2000, the role's); the last two
measurements retire a backlog while a publisher holds BENCH_RETENTION_PEAK messages/s (default
12600, the batch publish of docs/benchmarks.md) beside them. Prints the
figures that docs/benchmarks.md's retention section quotes (bench/analysis.md)."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgmsg import Client

TAG = "bench-retention"
# The batches of roles/housekeeping/defaults/main.yml (housekeeping_archive_batch).
ARCHIVE_BATCH = EXPIRE_BATCH = int(os.environ.get("BENCH_RETENTION_BATCH", "2000"))
# The highest publish rate of docs/benchmarks.md (batch publish), held while retention runs.
PEAK = int(os.environ.get("BENCH_RETENTION_PEAK", "12600"))


def timed_batches(
    conn: psycopg.Connection[Any], call: str, args: tuple[Any, ...]
) -> tuple[int, float, list[float]]:
    """Call a one-batch function until it returns 0 (autocommit: one transaction each);
    rows retired, seconds in all, and each batch's duration in ms."""
    total, durations, started = 0, [], time.perf_counter()
    while True:
        t0 = time.perf_counter()
        n = conn.execute(call, args).fetchone()["n"]
        durations.append((time.perf_counter() - t0) * 1000)
        if n == 0:
            return total, time.perf_counter() - started, durations
        total += n


def size(conn: psycopg.Connection[Any], table: str) -> str:
    return conn.execute(
        "SELECT pg_size_pretty(pg_table_size(%s::regclass)) || ' + ' || "
        "pg_size_pretty(pg_indexes_size(%s::regclass)) AS s",
        (table, table),
    ).fetchone()["s"]


def publishing(dsn: str, stop: threading.Event, rate: list[float]) -> None:
    """Publish batches of 1,000 (three subscribers) paced to PEAK messages/s until stopped."""
    with Client(dsn, max_size=1) as client:
        sent, t0 = 0, time.perf_counter()
        while not stop.is_set():
            client.publish_many([(TAG + ".live", {"n": i}, "default") for i in range(1000)])
            sent += 1000
            ahead = sent / PEAK - (time.perf_counter() - t0)
            if ahead > 0:
                stop.wait(ahead)
        rate.append(sent / (time.perf_counter() - t0))


def while_publishing(conn: psycopg.Connection[Any], dsn: str, messages: int) -> None:
    """Archive, then expire, a backlog while a publisher holds the peak rate beside them."""
    for function in ("pgmsg_archive_messages", "pgmsg_expire_messages"):
        backlog(conn, messages, "400 days", "399 days")
        stop, rate = threading.Event(), []
        publisher = threading.Thread(target=publishing, args=(dsn, stop, rate))
        publisher.start()
        time.sleep(2)  # the publisher at its pace first
        try:
            moved, secs, d = timed_batches(
                conn, f"SELECT {function}(interval '30 days', %s) AS n", (ARCHIVE_BATCH,)
            )
        finally:
            stop.set()
            publisher.join()
        d.sort()
        print(
            f"{function} while publishing at {PEAK}/s: {moved} messages in {secs:.1f} s = "
            f"{moved / secs:,.0f} msg/s; transaction p50 {d[len(d) // 2]:.0f} ms, max {d[-1]:.0f} ms; "
            f"publisher held {rate[0]:,.0f} msg/s"
        )
        # What the publisher wrote meanwhile goes too (not past retention: deleted here).
        conn.execute("DELETE FROM messages WHERE message_type = %s", (TAG + ".live",))
    conn.execute("DELETE FROM messages_history WHERE message_type = %s", (TAG + ".e",))
    conn.execute("DELETE FROM message_delivery_history WHERE client_id LIKE %s", (TAG + "%",))


def main() -> None:
    dsn, messages = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        # The scheduled jobs would retire the same rows beside the measured calls: pause them.
        paused = [
            r["jobid"]
            for r in conn.execute(
                "UPDATE cron.job SET active = false WHERE jobname LIKE 'pgmsg-%' AND active RETURNING jobid"
            )
        ]
        try:
            measure(conn, dsn, messages)
        finally:
            conn.execute("UPDATE cron.job SET active = true WHERE jobid = ANY(%s)", (paused,))


def backlog(conn: psycopg.Connection[Any], messages: int, age: str, delivered_age: str) -> int:
    """messages past retention, three delivered deliveries each (the fan-out trigger writes them);
    returns how many deliveries."""
    t0 = time.perf_counter()
    for start in range(0, messages, 50_000):
        conn.execute(
            "INSERT INTO messages (message_type, payload, created_at) SELECT %s, "
            "jsonb_build_object('order', n, 'note', repeat('x', 100)), now() - %s::interval "
            "FROM generate_series(1, %s) n",
            (TAG + ".e", age, min(50_000, messages - start)),
        )
    conn.execute(
        "UPDATE message_delivery SET status = 'delivered', delivered_at = now() - %s::interval "
        "WHERE client_id LIKE %s",
        (delivered_age, TAG + "%"),
    )
    conn.execute("VACUUM ANALYZE messages, message_delivery")
    deliveries = conn.execute(
        "SELECT count(*) AS n FROM message_delivery WHERE client_id LIKE %s", (TAG + "%",)
    ).fetchone()["n"]
    print(f"setup: {messages} messages x 3 deliveries in {time.perf_counter() - t0:.1f} s")
    return deliveries


def retire(conn: psycopg.Connection[Any], function: str, batch: int, deliveries: int) -> None:
    """Archive or expire the whole backlog, batch after batch; print the rate and transaction lengths."""
    moved, secs, d = timed_batches(conn, f"SELECT {function}(interval '30 days', %s) AS n", (batch,))
    d.sort()
    print(
        f"{function} batch {batch}: {moved} messages (+{deliveries} deliveries) in {secs:.1f} s = "
        f"{moved / secs:,.0f} msg/s, {(moved + deliveries) / secs:,.0f} rows/s; "
        f"transaction p50 {d[len(d) // 2]:.0f} ms, max {d[-1]:.0f} ms"
    )
    # The dead rows are vacuum's work, which must keep up too (autovacuum does it in production).
    t0 = time.perf_counter()
    conn.execute("VACUUM messages, message_delivery, delivery_attempts")
    print(f"vacuum after {function}: {time.perf_counter() - t0:.1f} s")


def measure(conn: psycopg.Connection[Any], dsn: str, messages: int) -> None:
    for n in range(3):
        conn.execute(
            "INSERT INTO subscriptions (client_id, delivery_mode, message_type) VALUES (%s, 'async', %s)",
            (f"{TAG}-{n}", TAG + ".*"),
        )
    # Archive (history kept).
    deliveries = backlog(conn, messages, "400 days", "399 days")
    for t in ("messages", "message_delivery"):
        print(f"before: {t} {size(conn, t)}")
    retire(conn, "pgmsg_archive_messages", ARCHIVE_BATCH, deliveries)
    conn.execute("VACUUM ANALYZE messages, message_delivery, messages_history, message_delivery_history")
    for t in ("messages", "message_delivery", "messages_history", "message_delivery_history"):
        print(f"after archive: {t} {size(conn, t)}")
    conn.execute(
        "UPDATE messages_history SET archived_at = now() - interval '400 days' WHERE message_type = %s",
        (TAG + ".e",),
    )
    conn.execute(
        "UPDATE message_delivery_history SET archived_at = now() - interval '400 days' "
        "WHERE client_id LIKE %s",
        (TAG + "%",),
    )
    gone, secs, d = timed_batches(conn, "SELECT pgmsg_trim_history(interval '90 days', %s) AS n", (5000,))
    d.sort()
    print(
        f"history trim batch 5000: {gone} rows in {secs:.1f} s = {gone / secs:,.0f} rows/s; "
        f"transaction p50 {d[len(d) // 2]:.0f} ms, max {d[-1]:.0f} ms"
    )
    # Expire (no history): the same backlog deleted with its deliveries.
    deliveries = backlog(conn, messages, "400 days", "399 days")
    retire(conn, "pgmsg_expire_messages", EXPIRE_BATCH, deliveries)
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM messages_history WHERE message_type = %s", (TAG + ".e",)
        ).fetchone()["n"]
        == 0
    )
    # Purge: a fresh set of delivered deliveries whose messages stay.
    backlog(conn, messages, "0 days", "30 days")
    gone, secs, d = timed_batches(conn, "SELECT pgmsg_purge_deliveries(interval '7 days', %s) AS n", (5000,))
    d.sort()
    print(
        f"purge batch 5000: {gone} deliveries in {secs:.1f} s = {gone / secs:,.0f} rows/s; "
        f"transaction p50 {d[len(d) // 2]:.0f} ms, max {d[-1]:.0f} ms"
    )
    # Archive after the purge (the default ages: 7 days, then 30): messages without deliveries.
    conn.execute(
        "UPDATE messages SET created_at = now() - interval '400 days' WHERE message_type = %s", (TAG + ".e",)
    )
    conn.execute("VACUUM ANALYZE messages, message_delivery")
    retire(conn, "pgmsg_archive_messages", ARCHIVE_BATCH, 0)
    conn.execute("DELETE FROM messages_history WHERE message_type = %s", (TAG + ".e",))
    conn.execute("DELETE FROM messages WHERE message_type = %s", (TAG + ".e",))
    while_publishing(conn, dsn, messages)
    conn.execute("DELETE FROM subscriptions WHERE client_id LIKE %s", (TAG + "%",))


if __name__ == "__main__":
    main()
