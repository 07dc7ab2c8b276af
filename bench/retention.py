"""Retention throughput: how fast the housekeeping jobs retire rows, and how long each of their
transactions lasts. Run against a scratch database (it creates and retires its own rows):

    python -m bench.retention "host=127.0.0.1 port=25506 user=postgres dbname=messaging password=..." [messages]

Prints the figures that docs/benchmarks.md's retention section quotes (bench/analysis.md)."""

from __future__ import annotations

import sys
import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

TAG = "bench-retention"


def timed_batches(conn: psycopg.Connection[Any], call: str, args: tuple[Any, ...]) -> tuple[int, float, list[float]]:
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
    return conn.execute("SELECT pg_size_pretty(pg_table_size(%s::regclass)) || ' + ' || "
                        "pg_size_pretty(pg_indexes_size(%s::regclass)) AS s", (table, table)).fetchone()["s"]


def main() -> None:
    dsn, messages = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        # The scheduled jobs would retire the same rows beside the measured calls: pause them.
        paused = [r["jobid"] for r in conn.execute(
            "UPDATE cron.job SET active = false WHERE jobname LIKE 'pgmsg-%' AND active RETURNING jobid")]
        try:
            measure(conn, messages)
        finally:
            conn.execute("UPDATE cron.job SET active = true WHERE jobid = ANY(%s)", (paused,))


def measure(conn: psycopg.Connection[Any], messages: int) -> None:
    for n in range(3):
        conn.execute("INSERT INTO subscriptions (client_id, delivery_mode, message_type) "
                     "VALUES (%s, 'async', %s)", (f"{TAG}-{n}", TAG + ".*"))
    t0 = time.perf_counter()
    for start in range(0, messages, 50_000):
        conn.execute("INSERT INTO messages (message_type, payload, created_at) SELECT %s, "
                     "jsonb_build_object('order', n, 'note', repeat('x', 100)), now() - interval '400 days' "
                     "FROM generate_series(1, %s) n", (TAG + ".e", min(50_000, messages - start)))
    conn.execute("UPDATE message_delivery SET status = 'delivered', delivered_at = now() - interval '399 days' "
                 "WHERE client_id LIKE %s", (TAG + "%",))
    print(f"setup: {messages} messages x 3 deliveries in {time.perf_counter() - t0:.1f} s")
    conn.execute("VACUUM ANALYZE messages, message_delivery")
    for t in ("messages", "message_delivery"):
        print(f"before: {t} {size(conn, t)}")
    deliveries = conn.execute("SELECT count(*) AS n FROM message_delivery WHERE client_id LIKE %s",
                              (TAG + "%",)).fetchone()["n"]
    for batch in (2000,):
        moved, secs, d = timed_batches(conn, "SELECT pgmsg_archive_messages(interval '30 days', %s) AS n",
                                       (batch,))
        d.sort()
        print(f"archive batch {batch}: {moved} messages (+{deliveries} deliveries) in {secs:.1f} s = "
              f"{moved / secs:,.0f} msg/s, {(moved + deliveries) / secs:,.0f} rows/s; "
              f"transaction p50 {d[len(d) // 2]:.0f} ms, max {d[-1]:.0f} ms")
    conn.execute("VACUUM ANALYZE messages, message_delivery, messages_history, message_delivery_history")
    for t in ("messages", "message_delivery", "messages_history", "message_delivery_history"):
        print(f"after archive: {t} {size(conn, t)}")
    conn.execute("UPDATE messages_history SET archived_at = now() - interval '400 days' WHERE message_type = %s",
                 (TAG + ".e",))
    conn.execute("UPDATE message_delivery_history SET archived_at = now() - interval '400 days' "
                 "WHERE client_id LIKE %s", (TAG + "%",))
    gone, secs, d = timed_batches(conn, "SELECT pgmsg_trim_history(interval '90 days', %s) AS n", (5000,))
    d.sort()
    print(f"history trim batch 5000: {gone} rows in {secs:.1f} s = {gone / secs:,.0f} rows/s; "
          f"transaction p50 {d[len(d) // 2]:.0f} ms, max {d[-1]:.0f} ms")
    # Purge: a fresh set of delivered deliveries whose messages stay.
    conn.execute("INSERT INTO messages (message_type, payload) SELECT %s, jsonb_build_object('order', n) "
                 "FROM generate_series(1, %s) n", (TAG + ".e", messages))
    conn.execute("UPDATE message_delivery SET status = 'delivered', delivered_at = now() - interval '30 days' "
                 "WHERE client_id LIKE %s", (TAG + "%",))
    conn.execute("VACUUM ANALYZE message_delivery")
    gone, secs, d = timed_batches(conn, "SELECT pgmsg_purge_deliveries(interval '7 days', %s) AS n", (5000,))
    d.sort()
    print(f"purge batch 5000: {gone} deliveries in {secs:.1f} s = {gone / secs:,.0f} rows/s; "
          f"transaction p50 {d[len(d) // 2]:.0f} ms, max {d[-1]:.0f} ms")
    conn.execute("DELETE FROM messages WHERE message_type = %s", (TAG + ".e",))
    conn.execute("DELETE FROM subscriptions WHERE client_id LIKE %s", (TAG + "%",))


if __name__ == "__main__":
    main()
