"""Scenarios of scale: many subscriptions that do not match, and load sustained end to end.

``subscriptions`` measures what a publish pays for subscriptions it does not
match; ``sustained`` runs a publisher and the consumers together for a minute
and watches whether the backlog stays flat. Functions named ``_w_*`` run in
worker processes (see core.parallel).
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench import server
from bench.core import PAYLOAD, Config, Figure, parallel, rate
from bench.scenarios import ASYNC_SUBSCRIBERS, PUBLISH_TYPE, FanOut, Publisher, size_label, subscribe_async
from pgmsg import Client

# -- subscriptions that do not match -------------------------------------------------------

#: Non-matching subscriptions per step, full and smoke (whose counts stand in for the full
#: ones' keys, as growth's sizes do); each step adds to the one before.
SUBSCRIPTION_COUNTS = ((0, 0), (1_000, 50), (10_000, 200), (100_000, 500))

#: Subscriptions the published message (bench.order in 'default') does not match: half exact
#: types, half patterns with a literal prefix, and one in a hundred on the published type but
#: in another namespace, so a namespace filter has to be read too.
ADD_NON_MATCHING = """
INSERT INTO subscriptions (client_id, delivery_mode, message_type, namespace)
SELECT 'bench-other-' || g, 'async',
       CASE WHEN g %% 100 = 0 THEN %(type)s
            WHEN g %% 2 = 0 THEN 'other.type.' || g
            ELSE 'cust' || g || '.*' END,
       CASE WHEN g %% 100 = 0 THEN 'tenant-' || g ELSE '*' END
  FROM generate_series(%(first)s::int, %(last)s::int) AS g
"""


def _w_publish_for(dsn: str, seconds: float, batch: int) -> int:
    """Publish (1 message per transaction, or batches through publish_many) until ``seconds``
    have passed, at least once; the number of messages published."""
    sent = 0
    rows = [(PUBLISH_TYPE, PAYLOAD, "default")] * batch
    with Client(dsn, max_size=1) as c:
        deadline = time.monotonic() + seconds
        while sent == 0 or time.monotonic() < deadline:
            if batch == 1:
                c.publish(PUBLISH_TYPE, PAYLOAD)
            else:
                c.publish_many(rows)
            sent += batch
    return sent


def subscriptions(dsn: str, cfg: Config) -> list[Figure]:
    """Publish rates, both forms, as non-matching subscriptions are added (3 that match)."""
    server.reset(dsn)
    subscribe_async(dsn)
    seconds = cfg.n(5, 1)
    figures: list[Figure] = []
    have = 0
    for full, smoke in SUBSCRIPTION_COUNTS:
        count = cfg.n(full, smoke)
        with psycopg.connect(dsn, autocommit=True) as conn:
            if count > have:
                conn.execute(ADD_NON_MATCHING, {"type": PUBLISH_TYPE, "first": have + 1, "last": count})
                have = count
            conn.execute("ANALYZE subscriptions")
            # The same empty tables for every step: only the subscriptions differ.
            conn.execute("TRUNCATE delivery_attempts, message_delivery, messages, message_inbox CASCADE")
            conn.execute("CHECKPOINT")
        for form, batch, what in (("publish", 1, "1 message"), ("batch", 1000, "1,000 messages")):
            fig = Figure(
                f"subscriptions.{form}.{size_label(full)}",
                "10. Subscriptions",
                f"Publish, {what} per transaction, 1 client, 3 async subscribers "
                f"and {count:,} that do not match",
                "msg/s",
                "rate",
            )
            for _ in range(cfg.repeat):
                elapsed, (sent,) = parallel(_w_publish_for, [(dsn, seconds, batch)])
                fig.rounds.append(rate(sent, elapsed))
            figures.append(fig)
    for fig in figures:
        none = next(f for f in figures if f.key == fig.key.rsplit(".", 1)[0] + ".0")
        if fig is not none:
            fig.note = f"{fig.median / none.median:.2f} x the rate with none (`{none.key}`)"
    return figures


# -- sustained end to end ----------------------------------------------------------------------

#: Publish and consume in batches of this many.
SUSTAINED_BATCH = 100
#: A flat backlog: over the sustained window it grew by at most one batch per consumer
#: (by the least-squares line through the samples, not by two noisy ends).
FLAT_BACKLOG = SUSTAINED_BATCH * len(ASYNC_SUBSCRIBERS)
#: Rounds of the sustained runs at most: each lasts a minute.
SUSTAINED_ROUNDS = 3
#: The backlogs, read without scanning the tables they measure: a count(*) of a million rows each
#: second took a core's tenth or more (JIT-compiled, in parallel workers) from the run it measured.
#: Deliveries created so far (the delivery id sequence, restarted with every round) ...
CREATED = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM message_delivery_id_seq"
#: ... and deferred messages waiting to be moved: the id range from the first waiting one to the
#: last (one publisher, moved in id order), through the primary key.
INBOX = (
    "SELECT coalesce((SELECT max(id) FROM message_inbox) "
    "- (SELECT id FROM message_inbox WHERE error IS NULL ORDER BY id LIMIT 1) + 1, 0)"
)


def _w_drain(dsn: str, client_id: str, batch: int, ready: Any, stop: Any, acked: Any) -> None:
    """Claim and ack until stopped, adding each ack to the shared counter ``acked``."""
    with Client(dsn, max_size=1) as c:
        ready.set()
        while not stop.is_set():
            claimed = c.claim(client_id, batch, consumer="bench")
            if claimed:
                acked.value += c.ack(claimed)
            else:
                time.sleep(0.002)


def _sample(read: Callable[[], float], start: float, seconds: float) -> list[tuple[float, float]]:
    """``read()`` once a second from ``start`` for ``seconds``: (seconds since, level)."""
    series = []
    for tick in range(int(seconds) + 1):
        time.sleep(max(0.0, start + tick - time.monotonic()))
        series.append((time.monotonic() - start, read()))
    return series


def _level(conn: psycopg.Connection[Any], query: str) -> float:
    return float(conn.execute(query).fetchone()[0])


def _growth(series: list[tuple[float, float]]) -> float:
    """How much the level rose over the series by its least-squares line (not two noisy ends)."""
    if len(series) < 2:
        return 0.0
    slope = statistics.linear_regression([t for t, _ in series], [v for _, v in series]).slope
    return slope * (series[-1][0] - series[0][0])


def _e2e_round(dsn: str, warmup: float, window: float) -> tuple[float, float, list[tuple[float, float]]]:
    """One publisher and a consumer per subscriber for warm-up + window seconds: messages fully
    consumed per second over the window, messages published per second, the backlog series."""
    server.reset(dsn)
    subscribe_async(dsn)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    counters = [ctx.Value("q", 0, lock=False) for _ in ASYNC_SUBSCRIBERS]
    ready = [ctx.Event() for _ in ASYNC_SUBSCRIBERS]
    consumers = [
        ctx.Process(target=_w_drain, args=(dsn, client_id, SUSTAINED_BATCH, r, stop, counter), daemon=True)
        for client_id, r, counter in zip(ASYNC_SUBSCRIBERS, ready, counters, strict=True)
    ]
    for p in consumers:
        p.start()
    try:
        if not all(r.wait(60) for r in ready):
            raise RuntimeError("a sustained consumer did not start")
        with (
            Publisher(dsn, math.inf, SUSTAINED_BATCH, message_type=PUBLISH_TYPE) as publisher,
            psycopg.connect(dsn, autocommit=True) as conn,
        ):
            time.sleep(warmup)
            start, acked = time.monotonic(), sum(c.value for c in counters)
            series = _sample(lambda: _level(conn, CREATED) - sum(c.value for c in counters), start, window)
            consumed = (sum(c.value for c in counters) - acked) / len(ASYNC_SUBSCRIBERS)
            elapsed = time.monotonic() - start
    finally:
        stop.set()
        for p in consumers:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    if any(p.exitcode for p in consumers):
        raise RuntimeError(f"a sustained consumer failed: exit codes {[p.exitcode for p in consumers]}")
    return rate(int(consumed), elapsed), publisher.sent / publisher.seconds, series


def _deferred_round(dsn: str, window: float) -> tuple[float, list[tuple[float, float]]]:
    """Deferred batches of 1,000 for ``window`` seconds beside the fan-out worker: messages per
    second until the last delivery exists, and the inbox depth series."""
    server.reset(dsn)
    subscribe_async(dsn)
    with FanOut(dsn) as worker:
        with (
            Publisher(dsn, math.inf, 1000, message_type=PUBLISH_TYPE, deferred=True) as publisher,
            psycopg.connect(dsn, autocommit=True) as conn,
        ):
            series = _sample(lambda: _level(conn, INBOX), time.monotonic(), window)
        drain = worker.drained(timeout=600)
    return rate(publisher.sent, publisher.seconds + drain), series


def sustained(dsn: str, cfg: Config) -> list[Figure]:
    group = "11. Sustained"
    warmup, window = cfg.n(5, 1), cfg.n(60, 3)
    rounds = min(cfg.repeat, SUSTAINED_ROUNDS)
    setting = (
        f"1 publisher (publish_many, batches of {SUSTAINED_BATCH}, as fast as it can) and one consumer "
        f"per async subscriber (claim and ack, batches of {SUSTAINED_BATCH}); {window} s measured after "
        f"a {warmup} s warm-up"
    )
    e2e = Figure(
        "sustained.e2e",
        group,
        "Sustained end to end: messages fully consumed (acked by all 3 subscribers)",
        "msg/s",
        "rate",
        note=f"{setting}; acked deliveries / 3 over the window; series: deliveries created and not yet "
        "acked, each second (the delivery id sequence less the consumers' acks)",
    )
    published = Figure(
        "sustained.published", group, "Sustained end to end: messages published meanwhile", "msg/s", "rate"
    )
    start = Figure(
        "sustained.backlog_start",
        group,
        "Deliveries not yet acked at the window's start",
        "deliveries",
        "count",
    )
    end = Figure(
        "sustained.backlog_end", group, "Deliveries not yet acked at the window's end", "deliveries", "count"
    )
    growth = Figure(
        "sustained.backlog_growth",
        group,
        "Backlog growth over the window (least-squares line through the samples)",
        "deliveries",
        "count",
        note=f"flat when it is at most one batch per consumer ({FLAT_BACKLOG} deliveries)",
    )
    for _ in range(rounds):
        consumed, sent, series = _e2e_round(dsn, warmup, window)
        e2e.rounds.append(consumed)
        published.rounds.append(sent)
        start.rounds.append(series[0][1])
        end.rounds.append(series[-1][1])
        growth.rounds.append(_growth(series))
        e2e.series = series
    deferred = Figure(
        "sustained.deferred.batch_1000",
        group,
        "Sustained deferred publish, batches of 1,000, until every delivery exists",
        "msg/s",
        "rate",
        note=f"1 publisher for {window} s beside the fan-out worker (pgmsg-fan-out, its defaults), "
        "3 async subscribers; messages / (publishing + draining the inbox); series: messages waiting in the inbox "
        "each second (the id range from the first waiting one to the last)",
    )
    for _ in range(rounds):
        value, deferred.series = _deferred_round(dsn, window)
        deferred.rounds.append(value)
    return [e2e, published, start, end, growth, deferred]
