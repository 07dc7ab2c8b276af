"""Where a sustained run's time goes: ``python -m bench.sustained_costs [--messages N] [--port P]``.

The budgets of the two sustained targets (bench/analysis.md, "Issue 19"): one publisher in
batches of 100 and three subscribers' consumers claiming and acking in batches of 100; and a
deferred publisher in batches of 1,000 beside the fan-out worker moving them into messages; all
on this machine's cores. Measured per message or per delivery on a throwaway bench server:

- the server's execution time of each statement (``pg_stat_statements``, top-level statements,
  triggers and nested statements included; commits, round trips and the WAL writer are not);
- the consumer's own CPU (``time.process_time`` of the process running ``pgmsg.Client``);
- the claim's and the ack's UPDATE alone, by id, on ``message_delivery`` as deployed (no update
  is HOT: ``status`` is in the partial indexes' predicates), and on a copy with the same rows, the
  primary and unique keys only and fillfactor 70, where both updates are HOT: the most that
  "HOT updates for claim and ack" could save, since a claim still has to find pending rows.

From those it prints upper bounds of the sustained rates, every core busy with nothing but these
statements and the consumers' Python, beside the targets (6 and 15 x the raw INSERT reference
measured in the same run). The bench server is never a deployment; best of ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from bench import server
from bench.scenarios import (
    ASYNC_SUBSCRIBERS,
    _raw_table,
    _w_publish_batches,
    _w_raw_insert,
    subscribe_async,
)
from pgmsg import Client

BATCH = 100
DEFERRED_BATCH = 1000
#: The sustained targets, as multiples of the reference (bench/report.py).
SUSTAINED_TARGET = 6
DEFERRED_TARGET = 15

#: The claim's and the ack's changes to a delivery row (pgmsg_claim, pgmsg_ack), by id.
CLAIM_UPDATE = (
    "UPDATE {table} SET status = 'processing', attempts = attempts + 1, "
    "lease_expires_at = now() + interval '30 s', lease_token = gen_random_uuid(), "
    "claimed_at = now(), claimed_by = 'bench', updated_at = now() WHERE id = ANY (%s)"
)
ACK_UPDATE = (
    "UPDATE {table} SET status = 'delivered', delivered_at = clock_timestamp(), lease_expires_at = NULL, "
    "lease_token = NULL, last_error = NULL, updated_at = now() WHERE id = ANY (%s)"
)
HOT_COPY = "bench_delivery_hot"


@dataclass
class Costs:
    """µs per message (publish) or per delivery (the rest)."""

    publish: float
    claim: float
    ack: float
    client_cpu: float
    update_claim: float
    update_ack: float
    hot_claim: float
    hot_ack: float
    hot_fraction: float
    deployed_hot_fraction: float
    deferred_publish: float
    deferred_move: float
    reference: float  # rows/s


def server_us(dsn: str, work: Callable[[], int], only: str = "%") -> float:
    """Server execution µs per unit of ``work`` (which returns how many units it did), of the
    top-level statements whose text is LIKE ``only``."""
    return server_us_by(dsn, work, {"all": only})["all"]


def server_us_by(dsn: str, work: Callable[[], int], patterns: dict[str, str]) -> dict[str, float]:
    """As server_us, one figure per name of ``patterns`` (a LIKE pattern of the statements' text)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        units = work()
        totals = {
            name: conn.execute(
                "SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements "
                "WHERE toplevel AND query NOT LIKE '%%pg_stat_statements%%' AND query LIKE %s",
                (pattern,),
            ).fetchone()[0]
            for name, pattern in patterns.items()
        }
    if not units:
        raise RuntimeError("the measured work did nothing")
    return {name: float(total_ms) * 1000 / units for name, total_ms in totals.items()}


def published(dsn: str, messages: int, batch: int, *, deferred: bool = False) -> int:
    """Publish ``messages`` in batches, as the bench's publishers do; how many were published."""
    _w_publish_batches(dsn, messages // batch, batch, deferred)
    return messages // batch * batch


def consume(dsn: str, client_id: str, cpu: list[float]) -> int:
    """Claim and ack everything of one client through pgmsg.Client, as a consumer does; the
    process's CPU time goes into ``cpu``."""
    done = 0
    with Client(dsn, max_size=1) as c:
        started = time.process_time()
        while claimed := c.claim(client_id, BATCH, consumer="bench"):
            done += c.ack(claimed)
        cpu.append(time.process_time() - started)
    return done


def move_deferred(dsn: str) -> int:
    """What the fan-out worker does: move the inbox into messages (which fans out), a batch a call."""
    moved = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while n := conn.execute("SELECT pgmsg_fan_out_deferred(%s)", (DEFERRED_BATCH,)).fetchone()[0]:
            moved += n
    return moved


def updates(dsn: str, table: str, client_id: str, statement: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(f"SELECT id FROM {table} WHERE client_id = %s ORDER BY id", (client_id,))
        ]
        for start in range(0, len(ids), BATCH):
            conn.execute(statement.format(table=table), (ids[start : start + BATCH],))
    return len(ids)


def hot_copy(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {HOT_COPY}")
        conn.execute(
            f"CREATE TABLE {HOT_COPY} (LIKE message_delivery INCLUDING DEFAULTS) WITH (fillfactor = 70)"
        )
        conn.execute(f"INSERT INTO {HOT_COPY} SELECT * FROM message_delivery")
        conn.execute(f"ALTER TABLE {HOT_COPY} ADD PRIMARY KEY (id), ADD UNIQUE (message_id, subscription_id)")
        conn.execute(f"VACUUM ANALYZE {HOT_COPY}")


def update_counts(dsn: str, table: str, at_least: int = 0) -> tuple[int, int]:
    """(updates, HOT updates) of ``table`` so far, once the statistics show ``at_least`` updates
    (a backend reports its counts when its connection closes, a moment after)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 15
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = %s", (table,)
            ).fetchone()
            updated, hot = row if row else (0, 0)
            if updated >= at_least or time.monotonic() > deadline:
                return updated, hot


def hot_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    updated = after[0] - before[0]
    if updated <= 0:
        raise RuntimeError("the statistics show no updates")
    return (after[1] - before[1]) / updated


def reference(dsn: str) -> float:
    _raw_table(dsn)
    count = 2000
    started = time.perf_counter()
    _w_raw_insert(dsn, count)
    return count / (time.perf_counter() - started)


def measure_once(dsn: str, messages: int) -> Costs:
    server.reset(dsn)
    subscribe_async(dsn)
    billing, _, analytics = ASYNC_SUBSCRIBERS
    ref = reference(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    pub = server_us(dsn, lambda: published(dsn, messages, BATCH))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE message_delivery")
    hot_copy(dsn)
    deployed_before = update_counts(dsn, "message_delivery")
    cpu: list[float] = []
    consumed = server_us_by(
        dsn, lambda: consume(dsn, billing, cpu), {"claim": "%pgmsg_claim(%", "ack": "%pgmsg_ack(%"}
    )
    claim_update = server_us(
        dsn, lambda: updates(dsn, "message_delivery", analytics, CLAIM_UPDATE), "UPDATE%"
    )
    ack_update = server_us(dsn, lambda: updates(dsn, "message_delivery", analytics, ACK_UPDATE), "UPDATE%")
    hot_claim = server_us(dsn, lambda: updates(dsn, HOT_COPY, analytics, CLAIM_UPDATE), "UPDATE%")
    hot_ack = server_us(dsn, lambda: updates(dsn, HOT_COPY, analytics, ACK_UPDATE), "UPDATE%")
    deferred = max(messages // DEFERRED_BATCH, 1) * DEFERRED_BATCH
    deferred_publish = server_us(
        dsn, lambda: published(dsn, deferred, DEFERRED_BATCH, deferred=True), "%message_inbox%"
    )
    deferred_move = server_us(dsn, lambda: move_deferred(dsn), "%pgmsg_fan_out_deferred%")
    # Claims and acks of one client, and both updates of another.
    deployed_after = update_counts(dsn, "message_delivery", deployed_before[0] + 4 * messages)
    copy_after = update_counts(dsn, HOT_COPY, 2 * messages)
    return Costs(
        publish=pub,
        claim=consumed["claim"],
        ack=consumed["ack"],
        client_cpu=cpu[0] * 1e6 / messages,
        update_claim=claim_update,
        update_ack=ack_update,
        hot_claim=hot_claim,
        hot_ack=hot_ack,
        hot_fraction=hot_fraction((0, 0), copy_after),
        deployed_hot_fraction=hot_fraction(deployed_before, deployed_after),
        deferred_publish=deferred_publish,
        deferred_move=deferred_move,
        reference=ref,
    )


def best(rounds: list[Costs]) -> Costs:
    """The lowest cost of each figure (the highest reference): the least the work can cost here."""
    fields = Costs.__dataclass_fields__
    return Costs(
        **{
            name: (max if name in ("reference", "hot_fraction", "deployed_hot_fraction") else min)(
                getattr(r, name) for r in rounds
            )
            for name in fields
        }
    )


def bound(costs: Costs, cores: int, claim_ack: float) -> float:
    """Messages/s fully consumed if every core did only this: a publish in batches plus, for each of
    the three subscribers, a claim and an ack and the consumer's Python."""
    per_message = costs.publish + len(ASYNC_SUBSCRIBERS) * (claim_ack + costs.client_cpu)
    return cores * 1e6 / per_message


def report(c: Costs, cores: int, rounds: int) -> str:
    saved = (c.update_claim + c.update_ack) - (c.hot_claim + c.hot_ack)
    deployed, with_hot = bound(c, cores, c.claim + c.ack), bound(c, cores, c.claim + c.ack - saved)
    target = SUSTAINED_TARGET * c.reference
    # One mover at a time (pgmsg_fan_out_deferred holds an advisory lock: messages move in id
    # order), so the moves have one core however many there are.
    deferred = min(cores * 1e6 / (c.deferred_publish + c.deferred_move), 1e6 / c.deferred_move)
    lines = [
        f"{len(ASYNC_SUBSCRIBERS)} async subscribers, batches of {BATCH}; best of {rounds} rounds; {cores} cores",
        f"reference (raw INSERT, 1 row per transaction): {c.reference:,.0f} rows/s; "
        f"the sustained target {SUSTAINED_TARGET} x = {target:,.0f} messages/s",
        "",
        "| per message or delivery | µs |",
        "|---|---:|",
        f"| publish (publish_many, batches of {BATCH}), server, per message | {c.publish:.1f} |",
        f"| claim (pgmsg_claim), server, per delivery | {c.claim:.1f} |",
        f"| ack (pgmsg_ack), server, per delivery | {c.ack:.1f} |",
        f"| consumer's Python (pgmsg.Client claim + ack), per delivery | {c.client_cpu:.1f} |",
        f"| the claim's UPDATE alone, message_delivery as deployed ({c.deployed_hot_fraction:.0%} HOT) "
        f"| {c.update_claim:.1f} |",
        f"| the ack's UPDATE alone, message_delivery as deployed | {c.update_ack:.1f} |",
        f"| the claim's UPDATE, keys only, fillfactor 70 ({c.hot_fraction:.0%} HOT) | {c.hot_claim:.1f} |",
        f"| the ack's UPDATE, keys only, fillfactor 70 | {c.hot_ack:.1f} |",
        f"| deferred publish (batches of {DEFERRED_BATCH:,}, into message_inbox), server, per message "
        f"| {c.deferred_publish:.1f} |",
        f"| deferred fan-out (pgmsg_fan_out_deferred({DEFERRED_BATCH:,})), server, per message "
        f"| {c.deferred_move:.1f} |",
        "",
        f"upper bound, every core busy with only this: {deployed:,.0f} messages/s "
        f"({deployed / c.reference:.2f} x reference) as deployed; {with_hot:,.0f} messages/s "
        f"({with_hot / c.reference:.2f} x) if claim and ack were HOT at no other cost",
        f"deferred publish until fanned out, upper bound likewise (the moves on one core, one mover "
        f"at a time): {deferred:,.0f} messages/s "
        f"({deferred / c.reference:.2f} x reference; the target {DEFERRED_TARGET} x = "
        f"{DEFERRED_TARGET * c.reference:,.0f} messages/s)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sustained_costs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per round (3 deliveries each)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the lowest cost of each is shown")
    parser.add_argument("--port", type=int, default=server.DEFAULT_PORT + 7, help="bench server port")
    parser.add_argument("--image", help="pgmsg/postgres image to use (default: the deployed one)")
    args = parser.parse_args(argv)
    if args.messages < BATCH or args.rounds < 1:
        parser.error(f"--messages must be at least {BATCH} and --rounds at least 1")
    messages = args.messages // BATCH * BATCH
    srv = server.start(args.image, args.port)
    try:
        rounds = [measure_once(srv.dsn, messages) for _ in range(args.rounds)]
    finally:
        srv.stop()
    print(report(best(rounds), os.cpu_count() or 1, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
