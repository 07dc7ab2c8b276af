"""The peers measured next to pgmsg on the same PostgreSQL: PgQueuer, procrastinate and PGQ.

Each peer lives apart from pgmsg's tables in ``public``: PgQueuer in schema
``pgqueuer`` (its own ``db_schema`` setting), procrastinate in schema
``procrastinate`` (its SQL is unqualified, so its connections get that
``search_path``), PGQ in the ``pgq`` schema its extension owns. Every schema is
(re)installed with the peer's own installer at the start of ``run``, so running
twice on one server works, and every round starts from an empty queue.

Every figure times only the operation named in its title, through the peer's
normal client path; set-up (installing, emptying, pre-filling) stays outside
the clock. A peer that fails yields its figures with empty ``rounds`` and the
error in ``note``; the other peers still run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench.core import PAYLOAD, Config, Figure, rate

GROUP = "8. Peers"

#: What every job or event carries: the same JSON document pgmsg publishes.
PAYLOAD_JSON = json.dumps(PAYLOAD)

PGQUEUER_SCHEMA = "pgqueuer"
PROCRASTINATE_SCHEMA = "procrastinate"
PGQ_QUEUE = "bench_events"
PGQ_CONSUMER = "bench_consumer"
ENTRYPOINT = "noop"

#: Pre-fills go in chunks of this many jobs: set-up, never timed.
PREFILL_CHUNK = 1000
#: A worker that has not drained its queue after this long has failed.
WORKER_TIMEOUT = 300.0

#: Key -> (title, unit) for every figure this module returns, in report order.
SPECS: dict[str, tuple[str, str]] = {
    "pgqueuer.enqueue.single": ("PgQueuer: enqueue, one job per transaction, one client", "jobs/s"),
    "pgqueuer.enqueue.batch": ("PgQueuer: enqueue, 1000 jobs per call, one client", "jobs/s"),
    "pgqueuer.worker.batch10": ("PgQueuer: QueueManager draining a full queue, batch size 10", "jobs/s"),
    "pgqueuer.worker.batch100": ("PgQueuer: QueueManager draining a full queue, batch size 100", "jobs/s"),
    "procrastinate.defer": ("procrastinate: defer, one job per transaction, one client", "jobs/s"),
    "procrastinate.worker": ("procrastinate: worker draining a full queue (no-op task)", "jobs/s"),
    "pgq.insert_event": ("PGQ: pgq.insert_event, one event per transaction, one client", "events/s"),
    "pgq.consume.batch": ("PGQ: next_batch / get_batch_events / finish_batch until drained", "events/s"),
}


@dataclass
class Peer:
    """One peer's figures, filled round by round; a failure is recorded per figure."""

    cfg: Config
    figures: dict[str, Figure] = field(default_factory=dict)

    def figure(self, key: str) -> Figure:
        if key not in self.figures:
            title, unit = SPECS[key]
            self.figures[key] = Figure(key=key, group=GROUP, title=title, unit=unit, kind="rate")
        return self.figures[key]

    def measure(self, key: str, note: str, one_round: Callable[[], float]) -> None:
        """Run ``cfg.repeat`` rounds of one_round (which returns the round's rate)."""
        fig = self.figure(key)
        fig.note = note
        try:
            for _ in range(self.cfg.repeat):
                fig.rounds.append(one_round())
        except Exception as exc:  # recorded in the figure; the next measurement still runs
            self.fail(fig, exc)

    async def measure_async(self, key: str, note: str, one_round: Callable[[], Awaitable[float]]) -> None:
        fig = self.figure(key)
        fig.note = note
        try:
            for _ in range(self.cfg.repeat):
                fig.rounds.append(await one_round())
        except Exception as exc:
            self.fail(fig, exc)

    def fail_unmeasured(self, keys: list[str], exc: BaseException) -> None:
        """A set-up failure (import, install): every figure not yet measured carries it."""
        for key in keys:
            fig = self.figure(key)
            if not fig.rounds and not fig.note.startswith("failed:"):
                self.fail(fig, exc)

    @staticmethod
    def fail(fig: Figure, exc: BaseException) -> None:
        fig.rounds.clear()
        fig.note = f"failed: {type(exc).__name__}: {exc}".strip()
        traceback.print_exception(exc)


def run(dsn: str, cfg: Config) -> list[Figure]:
    """Measure every peer on the server at dsn; one Figure per entry of SPECS."""
    figures: list[Figure] = []
    peers: list[tuple[str, Callable[[str, Config, Peer], None]]] = [
        ("pgqueuer.", _pgqueuer),
        ("procrastinate.", _procrastinate),
        ("pgq.", _pgq),
    ]
    for prefix, measure_peer in peers:
        peer = Peer(cfg)
        keys = [key for key in SPECS if key.startswith(prefix)]
        try:
            measure_peer(dsn, cfg, peer)
        except Exception as exc:
            peer.fail_unmeasured(keys, exc)
        figures += [peer.figure(key) for key in keys]
    return figures


def _recreate_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _settle(dsn: str, schema: str) -> None:
    """Before a timed section: fresh statistics for the peer's tables and a checkpoint.

    Like server.reset between pgmsg's scenarios, so that every round starts
    alike (planner statistics after a pre-fill, no checkpoint pending).
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            sql.Identifier(schema, name)
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchall()
        ]
        if tables:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.SQL(", ").join(tables)))
        conn.execute("CHECKPOINT")


# --------------------------------------------------------------------------- PgQueuer


def _pgqueuer(dsn: str, cfg: Config, peer: Peer) -> None:
    asyncio.run(_pgqueuer_async(dsn, cfg, peer))


def _asyncpg_connect_args(dsn: str) -> dict[str, Any]:
    """asyncpg.connect keyword arguments for a libpq keyword DSN (server.Server.dsn).

    asyncpg reads URIs but not libpq keyword strings, so the DSN is parsed by
    libpq's rules (psycopg) and its parameters renamed; one asyncpg cannot take
    is refused rather than dropped.
    """
    names = {"host": "host", "port": "port", "user": "user", "password": "password", "dbname": "database"}
    params = conninfo_to_dict(dsn)
    if unknown := sorted(set(params) - set(names)):
        raise ValueError(f"DSN parameters not passed on to asyncpg: {', '.join(unknown)}")
    args: dict[str, Any] = {names[key]: value for key, value in params.items()}
    if "port" in args:
        args["port"] = int(args["port"])
    return args


async def _pgqueuer_async(dsn: str, cfg: Config, peer: Peer) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.adapters.persistence import qb
    from pgqueuer.domain.types import Channel, QueueEntrypoint

    # Explicit settings rather than PGQUEUER_* environment variables: every
    # object goes into its own schema, the rest (names, durable tables) as shipped.
    settings = qb.DBSettings(db_schema=PGQUEUER_SCHEMA)
    # PgQueuer qualifies every name with db_schema; the search_path on its
    # connections only makes sure nothing unqualified could land in pgmsg's public.
    connect_args = {**_asyncpg_connect_args(dsn), "server_settings": {"search_path": PGQUEUER_SCHEMA}}

    def queries_on(driver: AsyncpgDriver) -> Queries:
        # As PgQueuer's own CLI builds them (it prefers asyncpg when installed).
        return Queries(
            driver,
            qbe=qb.QueryBuilderEnvironment(settings),
            qbq=qb.QueryQueueBuilder(settings),
            qbs=qb.QuerySchedulerBuilder(settings),
        )

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Queries]:
        """Queries over one asyncpg connection (AsyncpgDriver): no transaction block,
        so every enqueue call is its own transaction."""
        conn = await asyncpg.connect(**connect_args)
        try:
            yield queries_on(AsyncpgDriver(conn))
        finally:
            await conn.close()

    _recreate_schema(dsn, PGQUEUER_SCHEMA)
    async with connect() as queries:
        await queries.install(create_schema=True)
    with psycopg.connect(dsn) as check:
        strays = check.execute(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname LIKE 'pgqueuer%%' AND n.nspname <> %s",
            (PGQUEUER_SCHEMA,),
        ).fetchall()
    if strays:
        raise RuntimeError(f"PgQueuer created objects outside schema {PGQUEUER_SCHEMA}: {strays}")

    async def clear() -> None:
        async with connect() as queries:
            await queries.clear_queue()
            await queries.clear_queue_log()
            await queries.clear_statistics_log()

    payload = PAYLOAD_JSON.encode()

    async def enqueue_single() -> float:
        n = cfg.n(2000, 100)
        await clear()
        _settle(dsn, PGQUEUER_SCHEMA)
        async with connect() as queries:
            start = time.perf_counter()
            for _ in range(n):
                await queries.enqueue(ENTRYPOINT, payload)
            return rate(n, time.perf_counter() - start)

    async def enqueue_batch() -> float:
        calls, size = cfg.n(20, 2), 1000
        await clear()
        _settle(dsn, PGQUEUER_SCHEMA)
        async with connect() as queries:
            entrypoints, priorities = [ENTRYPOINT] * size, [0] * size
            payloads: list[bytes | None] = [payload] * size
            start = time.perf_counter()
            for _ in range(calls):
                await queries.enqueue(entrypoints, payloads, priorities)
            return rate(calls * size, time.perf_counter() - start)

    async def worker(batch_size: int) -> float:
        n = cfg.n(10000, 200)
        await clear()
        async with connect() as queries:
            for done in range(0, n, PREFILL_CHUNK):
                size = min(PREFILL_CHUNK, n - done)
                await queries.enqueue([ENTRYPOINT] * size, [payload] * size, [0] * size)
        _settle(dsn, PGQUEUER_SCHEMA)

        async with connect() as queries:
            qm = QueueManager(queries, channel=Channel(settings.channel))
            handled = 0
            all_handled = asyncio.Event()

            @qm.entrypoint(ENTRYPOINT)
            async def noop(job: Any) -> None:
                nonlocal handled
                handled += 1
                if handled == n:
                    all_handled.set()

            start = time.perf_counter()
            manager = asyncio.create_task(qm.run(batch_size=batch_size))
            done_wait = asyncio.create_task(all_handled.wait())
            await asyncio.wait(
                {manager, done_wait}, timeout=WORKER_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            elapsed = time.perf_counter() - start
            qm.shutdown.set()
            done_wait.cancel()
            await manager  # raises if the manager failed before handling them all
            if handled != n:
                raise RuntimeError(f"PgQueuer handled {handled} of {n} jobs")
            # The manager flushes its status buffer on the way out: the queue must be empty now.
            left = await queries.queued_work([QueueEntrypoint(ENTRYPOINT)])
            if left:
                raise RuntimeError(f"PgQueuer left {left} jobs in the queue")
        return rate(n, elapsed)

    driver = f"asyncpg {asyncpg.__version__}"
    await peer.measure_async(
        "pgqueuer.enqueue.single",
        f"{driver}, one connection (AsyncpgDriver); "
        "Queries.enqueue(entrypoint, payload) per job, each its own transaction; "
        f"durable tables in schema {PGQUEUER_SCHEMA}",
        enqueue_single,
    )
    await peer.measure_async(
        "pgqueuer.enqueue.batch",
        f"{driver}, one connection (AsyncpgDriver); Queries.enqueue with lists of 1000 jobs per call",
        enqueue_batch,
    )
    for batch_size in (10, 100):
        await peer.measure_async(
            f"pgqueuer.worker.batch{batch_size}",
            f"{driver}, one connection (AsyncpgDriver) for LISTEN and queries, as PgQueuer's CLI "
            "runs it (AsyncpgPoolDriver with 4 or 10 connections was no faster in trials); "
            f"QueueManager.run(batch_size={batch_size}), everything "
            "else default (continuous mode, no max_concurrent_tasks, heartbeat_timeout 30 s, "
            "status log buffered per batch, on_failure=delete, no retries); no-op async handler; "
            "rate = N / (manager start .. N-th handler call); queue verified empty after",
            functools.partial(worker, batch_size),
        )


# --------------------------------------------------------------------------- procrastinate

#: procrastinate's worker concurrency for the figure (1 is its default; see the note).
PROCRASTINATE_CONCURRENCY = 10


def _procrastinate(dsn: str, cfg: Config, peer: Peer) -> None:
    asyncio.run(_procrastinate_async(dsn, cfg, peer))


async def _procrastinate_async(dsn: str, cfg: Config, peer: Peer) -> None:
    import procrastinate

    _recreate_schema(dsn, PROCRASTINATE_SCHEMA)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(PROCRASTINATE_SCHEMA)))

    # procrastinate's SQL names its objects unqualified: its pool's connections
    # get the schema as search_path (pool arguments pass through to psycopg_pool).
    connector = procrastinate.PsycopgConnector(
        conninfo=dsn, kwargs={"options": f"-c search_path={PROCRASTINATE_SCHEMA}"}
    )
    app = procrastinate.App(connector=connector)

    @app.task(name=ENTRYPOINT)
    async def noop(**event: Any) -> None:
        return None

    async def clear() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "TRUNCATE {}.procrastinate_jobs, {}.procrastinate_events, "
                    "{}.procrastinate_workers, {}.procrastinate_periodic_defers CASCADE"
                ).format(*[sql.Identifier(PROCRASTINATE_SCHEMA)] * 4)
            )

    async def defer() -> float:
        n = cfg.n(1000, 100)
        await clear()
        _settle(dsn, PROCRASTINATE_SCHEMA)
        start = time.perf_counter()
        for _ in range(n):
            await noop.defer_async(**PAYLOAD)
        return rate(n, time.perf_counter() - start)

    async def worker() -> float:
        n = cfg.n(1000, 100)
        await clear()
        for done in range(0, n, PREFILL_CHUNK):
            await noop.batch_defer_async(*[PAYLOAD] * min(PREFILL_CHUNK, n - done))
        _settle(dsn, PROCRASTINATE_SCHEMA)
        start = time.perf_counter()
        await asyncio.wait_for(
            app.run_worker_async(
                wait=False, concurrency=PROCRASTINATE_CONCURRENCY, install_signal_handlers=False
            ),
            WORKER_TIMEOUT,
        )
        elapsed = time.perf_counter() - start
        with psycopg.connect(dsn) as conn:
            counts: dict[str, int] = dict(
                conn.execute(
                    sql.SQL("SELECT status::text, count(*) FROM {}.procrastinate_jobs GROUP BY 1").format(
                        sql.Identifier(PROCRASTINATE_SCHEMA)
                    )
                ).fetchall()
            )
        if counts != {"succeeded": n}:
            raise RuntimeError(f"procrastinate worker left jobs as {counts}, expected {n} succeeded")
        return rate(n, elapsed)

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        pool = "psycopg 3 async (PsycopgConnector, default AsyncConnectionPool)"
        await peer.measure_async(
            "procrastinate.defer",
            f"{pool}; Task.defer_async(**payload) per job: one "
            "procrastinate_defer_jobs_v1 call and commit each; queue 'default'",
            defer,
        )
        await peer.measure_async(
            "procrastinate.worker",
            f"{pool}; App.run_worker_async(wait=False, "
            f"concurrency={PROCRASTINATE_CONCURRENCY}), everything else default (listen_notify, "
            "delete_jobs=never: finished jobs stay as 'succeeded', polling 5 s); no-op async task; "
            "rate = N / whole worker run incl. start-up and shutdown",
            worker,
        )


# --------------------------------------------------------------------------- PGQ

#: PGQ's ticker thresholds for the consume figure: a tick (the end of a batch)
#: once this many events have arrived; the default is 500.
PGQ_TICKER_MAX_COUNT = 1000
#: Events per transaction while pre-filling, with pgq.ticker() after each, as pgqd would poll.
PGQ_PREFILL_TX = 100


def _pgq(dsn: str, cfg: Config, peer: Peer) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgq")

        def fresh_queue() -> None:
            """Drop (with its consumers) and recreate the queue: empty event tables, no ticks."""
            if conn.execute("SELECT 1 FROM pgq.queue WHERE queue_name = %s", (PGQ_QUEUE,)).fetchone():
                conn.execute("SELECT pgq.drop_queue(%s, true)", (PGQ_QUEUE,))
            conn.execute("SELECT pgq.create_queue(%s)", (PGQ_QUEUE,))
            conn.execute(
                "SELECT pgq.set_queue_config(%s, 'ticker_max_count', %s)",
                (PGQ_QUEUE, str(PGQ_TICKER_MAX_COUNT)),
            )
            conn.execute("SELECT pgq.register_consumer(%s, %s)", (PGQ_QUEUE, PGQ_CONSUMER))

        def insert_event() -> float:
            n = cfg.n(2000, 100)
            fresh_queue()
            _settle(dsn, "pgq")
            start = time.perf_counter()
            for _ in range(n):  # autocommit: one transaction per event
                conn.execute("SELECT pgq.insert_event(%s, %s, %s)", (PGQ_QUEUE, ENTRYPOINT, PAYLOAD_JSON))
            return rate(n, time.perf_counter() - start)

        def consume() -> float:
            n = cfg.n(20000, 500)
            fresh_queue()
            for done in range(0, n, PGQ_PREFILL_TX):
                size = min(PGQ_PREFILL_TX, n - done)
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(
                        "SELECT pgq.insert_event(%s, %s, %s)", [(PGQ_QUEUE, ENTRYPOINT, PAYLOAD_JSON)] * size
                    )
                # Ticks only once ticker_max_count events are new since the last tick.
                conn.execute("SELECT pgq.ticker(%s)", (PGQ_QUEUE,))
            # Close the last, partial batch: force_tick makes the next ticker() tick.
            conn.execute("SELECT pgq.force_tick(%s)", (PGQ_QUEUE,))
            conn.execute("SELECT pgq.ticker(%s)", (PGQ_QUEUE,))
            _settle(dsn, "pgq")

            consumed = 0
            start = time.perf_counter()
            while consumed < n:
                with conn.transaction():  # a batch is consumed in one transaction
                    row = conn.execute("SELECT pgq.next_batch(%s, %s)", (PGQ_QUEUE, PGQ_CONSUMER)).fetchone()
                    batch_id = row[0] if row else None
                    if batch_id is None:
                        raise RuntimeError(f"PGQ had no batch after {consumed} of {n} events")
                    events = conn.execute(
                        "SELECT ev_id, ev_type, ev_data FROM pgq.get_batch_events(%s)", (batch_id,)
                    ).fetchall()
                    conn.execute("SELECT pgq.finish_batch(%s)", (batch_id,))
                consumed += len(events)
            elapsed = time.perf_counter() - start
            if consumed != n:
                raise RuntimeError(f"PGQ consumed {consumed} events, expected {n}")
            return rate(n, elapsed)

        client = "psycopg 3 sync, one connection"
        peer.measure(
            "pgq.insert_event",
            f"{client}; SELECT pgq.insert_event(queue, type, data), "
            "autocommit; PGQ 3 extension, queue defaults",
            insert_event,
        )
        peer.measure(
            "pgq.consume.batch",
            f"{client}; per batch one transaction of next_batch, "
            f"get_batch_events (all rows fetched), finish_batch; queue ticker_max_count="
            f"{PGQ_TICKER_MAX_COUNT} and pgq.ticker() after every {PGQ_PREFILL_TX}-event "
            f"pre-fill transaction, so batches hold ~{PGQ_TICKER_MAX_COUNT} events "
            "(ticking is set-up, not timed)",
            consume,
        )
        fresh_queue()  # leave no backlog behind


def main() -> None:
    from bench import server

    parser = argparse.ArgumentParser(description="Measure pgmsg's peers on a throwaway PostgreSQL.")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one round: seconds")
    args = parser.parse_args()
    srv = server.start()
    try:
        started = time.perf_counter()
        figures = run(srv.dsn, Config(smoke=args.smoke))
        for fig in figures:
            rounds = ", ".join(f"{r:.0f}" for r in fig.rounds)
            print(
                f"{fig.key:28} {fig.median:>10.0f} {fig.unit:9} [{rounds}]"
                + (f"  {fig.note}" if not fig.rounds else "")
            )
        print(f"peers took {time.perf_counter() - started:.1f} s")
    finally:
        srv.stop()


if __name__ == "__main__":
    # Run main() from the importable bench.peers rather than from __main__, so
    # that procrastinate's App is defined in a named module (it warns otherwise).
    from bench import peers

    peers.main()
