"""Where a publish's server time goes: ``python -m bench.publish_costs [--others N] [--port P]``.

Microseconds per message inside the server, for the table of bench/analysis.md ("Issue 19"):
one backend runs a PL/pgSQL loop of single-row INSERTs (and of publish_many's statement, a
JSON array of 1,000) into ``messages`` with one set of triggers enabled at a time, inside a
transaction that is rolled back; so no commit, round trip or NOTIFY delivery is in the
figures, only what the statement and its triggers cost. The variants (bench/publish_costs.sql)
are installed on a throwaway bench server, never on a deployment. ``--others N`` adds N active
subscriptions that do not match (exact types and prefix patterns) beside the three async
subscribers that do. Best of ``--rounds`` rounds, every variant once per round.

``--client N`` also times each variant as a user's publish costs it: N single-message
transactions from one client, each committed, once as deployed (the commit waits for the WAL
flush) and once with ``synchronous_commit = off`` (it does not), as a ratio to the raw INSERT
timed the same way. Every round runs every variant, in an order rotated by one each round so
that drift hits all of them alike; the median of the rounds is shown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

from bench import server
from bench.core import PAYLOAD
from bench.scenarios import ASYNC_SUBSCRIBERS, PUBLISH_TYPE, _raw_table, subscribe_async

#: Variant -> the triggers on messages it enables ("raw" inserts into the reference's table).
VARIANTS: dict[str, tuple[str, ...]] = {
    "raw INSERT into a plain table": (),
    "messages, no trigger": (),
    "+ validation trigger": ("messages_validate",),
    "+ bare row trigger writing the deliveries": ("messages_validate", "bench_row"),
    "+ the same as a statement trigger": ("messages_validate", "bench_statement"),
    "+ one wake-up NOTIFY per client": ("messages_validate", "bench_statement_wakeups"),
    "pgmsg_fan_out before 031": ("messages_validate", "bench_before_031"),
    "pgmsg_fan_out as deployed": ("messages_validate", "messages_fan_out"),
}
TRIGGERS = sorted({t for triggers in VARIANTS.values() for t in triggers})
SQL = Path(__file__).with_name("publish_costs.sql")
SINGLE = "INSERT INTO messages (message_type, namespace, payload) VALUES ('{type}', 'default', '{payload}')"
BATCH = (
    "INSERT INTO messages (message_type, namespace, payload) SELECT e->>0, e->>2, e->1 "
    "FROM jsonb_array_elements('{batch}'::jsonb) WITH ORDINALITY AS b(e, n) ORDER BY n"
)


def statements(variant: str) -> tuple[str, str, int]:
    """(the single-row statement, the batch statement, messages per batch statement)."""
    payload = json.dumps(PAYLOAD).replace("'", "''")
    batch = json.dumps([[PUBLISH_TYPE, PAYLOAD, "default"]] * 1000).replace("'", "''")
    if variant == "raw INSERT into a plain table":
        return (
            f"INSERT INTO bench_raw (payload) VALUES ('{payload}')",
            f"INSERT INTO bench_raw (payload) SELECT e->1 FROM jsonb_array_elements('{batch}'::jsonb) AS b(e)",
            1000,
        )
    return SINGLE.format(type=PUBLISH_TYPE, payload=payload), BATCH.format(batch=batch), 1000


def per_message(conn: psycopg.Connection, statement: str, repeat: int, messages: int) -> float:
    """µs per message of ``repeat`` runs of ``statement`` in one PL/pgSQL loop, rolled back."""
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TEMP TABLE bench_us (v float8) ON COMMIT DROP")
        conn.execute(
            f"""DO $loop$ DECLARE t0 timestamptz; BEGIN
                    FOR i IN 1..greatest({repeat} / 40, 1) LOOP {statement}; END LOOP;  -- warm-up
                    t0 := clock_timestamp();
                    FOR i IN 1..{repeat} LOOP {statement}; END LOOP;
                    INSERT INTO bench_us VALUES
                        (extract(epoch FROM clock_timestamp() - t0) * 1e6 / ({repeat} * {messages}));
                END $loop$"""
        )
        return float(conn.execute("SELECT v FROM bench_us").fetchone()[0])


def enable(conn: psycopg.Connection, variant: str) -> None:
    for trigger in TRIGGERS:
        action = "ENABLE" if trigger in VARIANTS[variant] else "DISABLE"
        conn.execute(f"ALTER TABLE messages {action} TRIGGER {trigger}")


def measure(dsn: str, others: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Variant -> (µs per single-row publish, µs per message in batches of 1,000), best of rounds."""
    _raw_table(dsn)
    subscribe_async(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SQL.read_text())
        if others:
            conn.execute(
                "INSERT INTO subscriptions (client_id, delivery_mode, message_type, namespace) "
                "SELECT 'other-' || g, 'async', CASE WHEN g %% 2 = 0 THEN 'other.type.' || g "
                "ELSE 'other' || g || '.*' END, '*' FROM generate_series(1, %s) AS g",
                (others,),
            )
            conn.execute("ANALYZE subscriptions")
        best: dict[str, tuple[float, float]] = {}
        for _ in range(rounds):
            for variant in VARIANTS:
                enable(conn, variant)
                single, batch, size = statements(variant)
                figures = (per_message(conn, single, 2000, 1), per_message(conn, batch, 10, size))
                old = best.get(variant, (float("inf"), float("inf")))
                best[variant] = (min(old[0], figures[0]), min(old[1], figures[1]))
        enable(conn, "pgmsg_fan_out as deployed")
    return best


def from_client(dsn: str, publishes: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Variant -> (µs per committed publish, the same without waiting for the flush), median of rounds.

    Run after :func:`measure` (which installs the variants and the subscribers)."""
    timed: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
    order = list(VARIANTS)
    with psycopg.connect(dsn, autocommit=True) as admin, psycopg.connect(dsn, autocommit=True) as conn:
        for round_number in range(rounds):
            shift = round_number % len(order)
            for variant in order[shift:] + order[:shift]:
                enable(admin, variant)
                single = statements(variant)[0]
                figures = []
                for flush in ("on", "off"):
                    conn.execute(f"SET synchronous_commit = {flush}")
                    for _ in range(max(publishes // 20, 5)):  # warm-up: plans, caches
                        conn.execute(single, prepare=True)
                    start = time.perf_counter()
                    for _ in range(publishes):
                        conn.execute(single, prepare=True)
                    figures.append((time.perf_counter() - start) * 1e6 / publishes)
                timed[variant].append((figures[0], figures[1]))
        enable(admin, "pgmsg_fan_out as deployed")
    return {
        variant: (statistics.median(f[0] for f in rows), statistics.median(f[1] for f in rows))
        for variant, rows in timed.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.publish_costs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--others", type=int, default=0, help="active subscriptions that do not match")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best of each is shown")
    parser.add_argument("--port", type=int, default=server.DEFAULT_PORT + 7, help="bench server port")
    parser.add_argument("--image", help="pgmsg/postgres image to use (default: the deployed one)")
    parser.add_argument(
        "--client",
        type=int,
        default=0,
        metavar="N",
        help="also time N committed single-message publishes per variant and round from the client",
    )
    args = parser.parse_args(argv)
    if args.others < 0 or args.rounds < 1 or args.client < 0 or 0 < args.client < 100:
        parser.error("--others must be 0 or more, --rounds at least 1 and --client 0 or at least 100")
    srv = server.start(args.image, args.port)
    try:
        best = measure(srv.dsn, args.others, args.rounds)
        client = from_client(srv.dsn, args.client, args.rounds) if args.client else {}
    finally:
        srv.stop()
    print(
        f"{len(ASYNC_SUBSCRIBERS)} async subscribers, {args.others:,} others; µs per message, "
        f"best of {args.rounds}"
    )
    print(f"| {'variant':<45} | single | batch 1,000 |\n|---|---:|---:|")
    for variant, (single, batch) in best.items():
        print(f"| {variant:<45} | {single:6.1f} | {batch:6.1f} |")
    if client:
        raw = client["raw INSERT into a plain table"]
        print(
            f"\nFrom the client, {args.client:,} committed single-message publishes per variant and "
            f"round; µs per publish, median of {args.rounds}"
        )
        print(
            f"| {'variant':<45} | committed | x raw | flush not awaited | x raw | the flush |\n"
            "|---|---:|---:|---:|---:|---:|"
        )
        for variant, (flushed, unflushed) in client.items():
            print(
                f"| {variant:<45} | {flushed:9.1f} | {raw[0] / flushed:5.2f} | {unflushed:17.1f} | "
                f"{raw[1] / unflushed:5.2f} | {flushed - unflushed:9.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
