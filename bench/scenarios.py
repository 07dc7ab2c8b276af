"""pgmsg's scenarios and the reference they are compared with.

Every scenario uses pgmsg the way a user does: ``pgmsg.Client`` to publish,
claim and ack, the LISTEN-woken consumer loop, the real dispatcher and the
sample webhook receiver that verifies signatures. Functions named ``_w_*`` run
in worker processes (see core.parallel) and so only take picklable arguments.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from bench import server
from bench.core import PAYLOAD, Config, Figure, parallel, percentile, rate
from pgmsg import Client

PUBLISH_TYPE = "bench.order"
ASYNC_SUBSCRIBERS = ("bench-billing", "bench-shipping", "bench-analytics")


# -- the reference --------------------------------------------------------------


def _w_raw_insert(dsn: str, count: int) -> list[float]:
    """One client, one transaction per row: INSERT the payload into a plain table."""
    body = json.dumps(PAYLOAD)
    latencies = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(count):
            start = time.perf_counter()
            conn.execute("INSERT INTO bench_raw (payload) VALUES (%s::jsonb)", (body,))
            latencies.append(time.perf_counter() - start)
    return latencies


def _raw_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_raw (id bigserial PRIMARY KEY, payload jsonb NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )


def reference(dsn: str, cfg: Config, label: str) -> list[Figure]:
    """Raw single-row INSERT of the same payload: rows/s and the per-row round trip in ms."""
    _raw_table(dsn)
    rates = Figure(
        f"reference.insert.{label}",
        "0. Reference",
        f"Raw INSERT, 1 client, 1 row per transaction ({label} of the run)",
        "rows/s",
        "rate",
    )
    latency = Figure(
        f"reference.insert_latency.{label}",
        "0. Reference",
        f"Raw INSERT round trip, median ({label} of the run)",
        "ms",
        "latency",
    )
    count = cfg.n(3000, 200)
    for _ in range(cfg.repeat):
        elapsed, (lat,) = parallel(_w_raw_insert, [(dsn, count)])
        rates.rounds.append(rate(count, elapsed))
        latency.rounds.append(percentile(lat, 50) * 1000)
    return [rates, latency]


# -- helpers ----------------------------------------------------------------------


def subscribe_async(
    dsn: str, clients: tuple[str, ...] = ASYNC_SUBSCRIBERS, message_type: str = PUBLISH_TYPE
) -> None:
    with Client(dsn, max_size=1) as c:
        for client_id in clients:
            c.subscribe(client_id, "async", message_type=message_type)


def prefill(dsn: str, message_type: str, count: int, batch: int = 1000) -> None:
    """Publish ``count`` messages of a type in batches (through the fan-out trigger)."""
    with Client(dsn, max_size=1) as c:
        for start in range(0, count, batch):
            c.publish_many([(message_type, PAYLOAD, "default")] * min(batch, count - start))


def _w_publish(dsn: str, count: int, message_type: str, deferred: bool = False) -> list[float]:
    latencies = []
    with Client(dsn, max_size=1) as c:
        for _ in range(count):
            start = time.perf_counter()
            c.publish(message_type, PAYLOAD, deferred=deferred)
            latencies.append(time.perf_counter() - start)
    return latencies


def _w_publish_batches(dsn: str, batches: int, size: int, deferred: bool = False) -> None:
    rows = [(PUBLISH_TYPE, PAYLOAD, "default")] * size
    with Client(dsn, max_size=1) as c:
        for _ in range(batches):
            c.publish_many(rows, deferred=deferred)


def _halted_by(stop: Any) -> threading.Event:
    """A thread event set once the multiprocessing event ``stop`` is (polled: see _w_idle_consumer)."""
    halt = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            time.sleep(0.05)
        halt.set()

    threading.Thread(target=watch, daemon=True).start()
    return halt


def _w_fan_out(dsn: str, ready: Any, stop: Any, out: Any) -> None:
    """The deferred fan-out worker (pgmsg-fan-out's loop, its default batch and poll interval)."""
    from pgmsg.workers.fan_out import FanOutWorker

    halt = _halted_by(stop)
    worker = FanOutWorker(dsn)
    ready.set()
    worker.run(halt)
    out.put(worker.moved)


class FanOut:
    """A deferred fan-out worker in its own process while the block runs, as deployed."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def __enter__(self) -> FanOut:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.stop, self.out, ready = ctx.Event(), ctx.Queue(), ctx.Event()
        self.proc = ctx.Process(target=_w_fan_out, args=(self.dsn, ready, self.stop, self.out), daemon=True)
        self.proc.start()
        if not ready.wait(30):
            raise RuntimeError("the fan-out worker did not start")
        return self

    def drained(self, timeout: float = 120) -> float:
        """Seconds until no deferred message waits."""
        start = time.monotonic()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while conn.execute("SELECT EXISTS (SELECT 1 FROM message_inbox WHERE error IS NULL)").fetchone()[
                0
            ]:
                if time.monotonic() - start > timeout:
                    raise RuntimeError("the fan-out worker did not drain message_inbox")
                time.sleep(0.002)
        return time.monotonic() - start

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.moved = self.out.get(timeout=30)
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


def _w_consume(dsn: str, client_id: str, batch: int) -> int:
    """Claim (lease, attempts) and ack until nothing is left; returns how many were done."""
    done = 0
    with Client(dsn, max_size=1) as c:
        while True:
            claimed = c.claim(client_id, batch, consumer="bench")
            if not claimed:
                return done
            done += c.ack([d for d in claimed])


# -- 1. publish, 2. batch publish ---------------------------------------------------


def publish(dsn: str, cfg: Config) -> list[Figure]:
    server.reset(dsn)
    subscribe_async(dsn)
    figures = []
    for clients in (1, 4):
        fig = Figure(
            f"publish.{clients}_client{'s' if clients > 1 else ''}",
            "1. Publish",
            f"Publish, 1 message per transaction, {clients} client{'s' if clients > 1 else ''}, "
            "3 async subscribers",
            "msg/s",
            "rate",
        )
        count = cfg.n(3000, 200) // clients
        for _ in range(cfg.repeat):
            elapsed, _lat = parallel(_w_publish, [(dsn, count, PUBLISH_TYPE)] * clients)
            fig.rounds.append(rate(count * clients, elapsed))
        figures.append(fig)

    fig = Figure(
        "publish.batch_1000",
        "2. Batch publish",
        "Batch publish, 1,000 messages per transaction, 1 client, 3 async subscribers",
        "msg/s",
        "rate",
    )
    batches = cfg.n(20, 2)
    for _ in range(cfg.repeat):
        elapsed, _ = parallel(_w_publish_batches, [(dsn, batches, 1000)])
        fig.rounds.append(rate(batches * 1000, elapsed))
    figures.append(fig)
    return figures + _publish_deferred(dsn, cfg)


def _publish_deferred(dsn: str, cfg: Config) -> list[Figure]:
    """1. and 2. with deferred fan-out, the fan-out worker running beside the publishers.

    Each rate has a companion: the same messages until the worker has fanned
    all of them out (the last delivery row written), which is what the
    publishers' rate costs the system as a whole."""
    # The reference again, in the same conditions: the fan-out worker beside it, and whatever
    # autovacuum is doing after the rounds before (the reference at the start of the run has
    # a fresh database to itself). A raw round just before and one just after each 1-client
    # round, averaged: a first version with a round before only gave deferred publishing
    # 1.4 x "the reference", the raw rounds having met the autovacuum of the round before.
    beside = Figure(
        "reference.beside_fan_out.insert",
        "1. Publish",
        "Raw INSERT, 1 client, 1 row per transaction, with the fan-out worker running",
        "rows/s",
        "rate",
        note="the reference measured in the deferred rounds' conditions; the deferred "
        "publish targets are judged against it",
    )
    figures = [beside]
    _raw_table(dsn)
    with FanOut(dsn) as worker:
        for clients in (1, 4, "batch"):
            plural = "s" if clients == 4 else ""
            if clients == "batch":
                key, group, title = (
                    "publish.deferred.batch_1000",
                    "2. Batch publish",
                    "Batch publish, deferred fan-out, 1,000 messages per transaction, 1 client",
                )
                count = cfg.n(20, 2) * 1000
                args = [(dsn, count // 1000, 1000, True)]
                target: Callable[..., Any] = _w_publish_batches
            else:
                key, group, title = (
                    f"publish.deferred.{clients}_client{plural}",
                    "1. Publish",
                    f"Publish, deferred fan-out, 1 message per transaction, {clients} client{plural}",
                )
                count = cfg.n(3000, 200) // int(clients) * int(clients)
                args = [(dsn, count // int(clients), PUBLISH_TYPE, True)] * int(clients)
                target = _w_publish
            fig = Figure(
                key,
                group,
                title + ", 3 async subscribers",
                "msg/s",
                "rate",
                note="the commit returns before the deliveries exist; the fan-out worker "
                "(pgmsg-fan-out, batches of 1,000, 10 ms poll) runs beside the publishers",
            )
            whole = Figure(
                key + ".fanned_out", group, title + ", until every delivery is written", "msg/s", "rate"
            )
            for _ in range(cfg.repeat):
                before = parallel(_w_raw_insert, [(dsn, count)])[0] if clients == 1 else 0.0
                elapsed, _ = parallel(target, args)
                fig.rounds.append(rate(count, elapsed))
                whole.rounds.append(rate(count, elapsed + worker.drained()))
                if clients == 1:
                    after, _ = parallel(_w_raw_insert, [(dsn, count)])
                    beside.rounds.append((rate(count, before) + rate(count, after)) / 2)
            figures += [fig, whole]
    return figures


# -- Client.publish against the same INSERT in plain SQL ---------------------------------

#: What Client.publish sends, written out: the bench states the SQL it compares with.
PLAIN_PUBLISH = (
    "INSERT INTO messages (message_type, namespace, payload, message_key) "
    "VALUES (%s, %s, %s::jsonb, %s) RETURNING id"
)


#: Publishes of each kind in a row before the other kind's turn (see _w_client_and_plain).
CLIENT_BLOCK = 100


def _w_client_and_plain(dsn: str, count: int, message_type: str) -> tuple[list[float], list[float]]:
    """``count`` publishes through Client.publish and ``count`` as a psycopg user would write
    them (autocommit, one statement per message, the payload encoded per message as the client
    encodes it), in alternating blocks of CLIENT_BLOCK from one process, so that autovacuum, a
    checkpoint or a neighbour's burst falls on both alike; seconds per publish of each."""
    ours: list[float] = []
    plain: list[float] = []
    with Client(dsn, max_size=1) as c, psycopg.connect(dsn, autocommit=True) as conn:
        while len(plain) < count:
            for _ in range(min(CLIENT_BLOCK, count - len(ours))):
                start = time.perf_counter()
                c.publish(message_type, PAYLOAD)
                ours.append(time.perf_counter() - start)
            for _ in range(min(CLIENT_BLOCK, count - len(plain))):
                start = time.perf_counter()
                conn.execute(PLAIN_PUBLISH, (message_type, "default", json.dumps(PAYLOAD), None)).fetchone()
                plain.append(time.perf_counter() - start)
    return ours, plain


def client(dsn: str, cfg: Config) -> list[Figure]:
    """Client.publish and plain SQL, interleaved in blocks so drift hits both alike."""
    server.reset(dsn)
    subscribe_async(dsn)
    ours = Figure(
        "client.publish",
        "9. Client overhead",
        "Client.publish, 1 message per transaction, 1 client, 3 async subscribers",
        "msg/s",
        "rate",
    )
    plain = Figure(
        "client.plain_sql",
        "9. Client overhead",
        "The same INSERT through psycopg (autocommit, RETURNING id), 1 client, 3 async subscribers",
        "msg/s",
        "rate",
        note=f"the statement Client.publish sends, the payload JSON-encoded per message; "
        f"blocks of {CLIENT_BLOCK} alternate with client.publish in one process; both timed per "
        "publish call, connecting not counted",
    )
    count = cfg.n(3000, 200)
    for _ in range(cfg.repeat):
        _, ((mine, theirs),) = parallel(_w_client_and_plain, [(dsn, count, PUBLISH_TYPE)])
        ours.rounds.append(rate(count, sum(mine)))
        plain.rounds.append(rate(count, sum(theirs)))
    return [ours, plain]


# -- 3. consume ----------------------------------------------------------------------


def consume(dsn: str, cfg: Config) -> list[Figure]:
    figures = []
    for batch in (1, 10, 100):
        for consumers in (1, 4):
            fig = Figure(
                f"consume.batch{batch}.{consumers}_consumer{'s' if consumers > 1 else ''}",
                "3. Consume",
                f"Consume with lease, attempts and ack: batch {batch}, "
                f"{consumers} consumer{'s' if consumers > 1 else ''}",
                "deliveries/s",
                "rate",
            )
            count = {1: cfg.n(3000, 100), 10: cfg.n(10000, 300), 100: cfg.n(30000, 1000)}[batch]
            for _ in range(cfg.repeat):
                server.reset(dsn)
                subscribe_async(dsn, ("bench-consumer",), "bench.work")
                prefill(dsn, "bench.work", count)
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE message_delivery")
                elapsed, done = parallel(_w_consume, [(dsn, "bench-consumer", batch)] * consumers)
                if sum(done) != count:
                    raise RuntimeError(f"consumers completed {sum(done)} of {count} deliveries")
                fig.rounds.append(rate(count, elapsed))
            figures.append(fig)
    return figures


# -- 4. end-to-end latency, 5. NOTIFY latency ------------------------------------------


def _w_idle_consumer(dsn: str, client_id: str, expected: int, ready: Any, done: Any, out: Any) -> None:
    """run_consumer (LISTEN-woken), recording (sequence number, clock) per delivery it is handed."""
    stop = threading.Event()
    seen: list[tuple[int, int]] = []

    def handle(delivery: Any) -> None:
        seen.append((delivery.payload["seq"], time.monotonic_ns()))
        if len(seen) >= expected:
            stop.set()

    def watch() -> None:
        # Polled, not done.wait(): a process that exits while waiting on a
        # multiprocessing Event leaves a sleeper behind that Event.set() then
        # waits for forever.
        while not done.is_set() and not stop.is_set():
            time.sleep(0.05)
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    with Client(dsn, max_size=2) as c:
        threading.Timer(0.5, ready.set).start()  # the LISTEN is open well before this fires
        c.run_consumer(client_id, handle, stop=stop, batch_size=10, idle_poll_seconds=1.0)
    out.put(seen)


def _w_notify_listener(dsn: str, channel: str, expected: int, ready: Any, done: Any, out: Any) -> None:
    seen: list[tuple[int, int]] = []
    with Client(dsn, max_size=1) as c, c.listener(channel) as listener:
        ready.set()
        while len(seen) < expected and not done.is_set():
            note = listener.next(timeout=0.5)
            if note is not None:
                seen.append((note.payload["payload"]["seq"], time.monotonic_ns()))
    out.put(seen)


def _w_paced_publisher(
    dsn: str,
    per_second: float,
    batch: int,
    stop: Any,
    out: Any,
    message_type: str = "bench.load",
    deferred: bool = False,
    ready: Any = None,
) -> None:
    """Publish ``batch`` messages per transaction at a steady ``per_second`` messages (as fast
    as it can with ``math.inf``) until stopped; put the count sent and the seconds it took.
    ``ready`` is set once connected, just before the first publish."""
    sent = 0
    rows = [(message_type, PAYLOAD, "default")] * batch
    with Client(dsn, max_size=1) as c:
        if ready is not None:  # the pool opened connected
            ready.set()
        start = time.monotonic()
        while not stop.is_set():
            if batch == 1:
                c.publish(message_type, PAYLOAD, deferred=deferred)
            else:
                c.publish_many(rows, deferred=deferred)
            sent += batch
            ahead = start + sent / per_second - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        out.put((sent, time.monotonic() - start))


class Publisher:
    """A publisher (_w_paced_publisher) in its own process while the block runs, entered once it
    is connected; ``sent`` and ``seconds`` hold what it did once the block is left."""

    def __init__(self, dsn: str, per_second: float, batch: int, **options: Any) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.stop, self.out, self.ready = ctx.Event(), ctx.Queue(), ctx.Event()
        self.proc = ctx.Process(
            target=_w_paced_publisher,
            args=(dsn, per_second, batch, self.stop, self.out),
            kwargs={**options, "ready": self.ready},
            daemon=True,
        )
        self.sent, self.seconds = 0, 0.0

    def __enter__(self) -> Publisher:
        self.proc.start()
        if not self.ready.wait(60):
            self.proc.kill()
            raise RuntimeError("the publisher did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.sent, self.seconds = self.out.get(timeout=120)
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


@dataclass
class LatencyRun:
    """One round: per message, from the publish call and from its return (the commit), in ms."""

    from_call: list[float]
    from_commit: list[float]
    lost: int


def _latency_run(
    dsn: str,
    listener: Callable[..., None],
    listener_args: tuple[Any, ...],
    message_type: str,
    samples: int,
    gap: float,
    deferred: bool = False,
) -> LatencyRun:
    """Publish ``samples`` messages ``gap`` seconds apart while a listener process records when
    each reaches it. The monotonic clock is system-wide on Linux, so the processes compare."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=listener, args=(dsn, *listener_args, samples, ready, done, out), daemon=True)
    proc.start()
    sent: dict[int, tuple[int, int]] = {}
    try:
        if not ready.wait(60):
            raise RuntimeError("the listener did not start")
        time.sleep(0.2)
        with Client(dsn, max_size=1) as c:
            for seq in range(samples):
                called = time.monotonic_ns()
                c.publish(message_type, {**PAYLOAD, "seq": seq}, deferred=deferred)
                sent[seq] = (called, time.monotonic_ns())
                time.sleep(gap)
        # What has not arrived within ten seconds of the last publish counts as lost.
        threading.Timer(10.0, done.set).start()
        received = out.get(timeout=60)
    finally:
        done.set()
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    run = LatencyRun([], [], samples - len({seq for seq, _ in received}))
    for seq, at in received:
        called, returned = sent[seq]
        run.from_call.append((at - called) / 1e6)
        run.from_commit.append((at - returned) / 1e6)
    return run


def _latency_figures(
    key: str, group: str, title: str, rounds: list[LatencyRun], percentiles: tuple[float, ...] = (50, 99)
) -> list[Figure]:
    """Per percentile a figure from the publish call (``key.pNN``) and one from its return
    (``key.commit.pNN``); p99.9 is keyed ``p99.9``."""
    figures = []
    for suffix, label, pick in (
        ("", "from the publish call", lambda r: r.from_call),
        (".commit", "from the publish's return (commit)", lambda r: r.from_commit),
    ):
        for p in percentiles:
            name = f"p{p:g}"
            fig = Figure(f"{key}{suffix}.{name}", group, f"{title}, {label}, {name}", "ms", "latency")
            fig.rounds = [percentile(pick(r), p) for r in rounds]
            figures.append(fig)
    lost = sum(r.lost for r in rounds)
    if lost:
        figures[0].note = f"{lost} message(s) never reached the listener within 10 s"
    return figures


#: The publish load of the loaded runs: messages per second, messages per transaction.
LOAD_PER_SECOND, LOAD_BATCH = 1000, 10
#: The percentiles of the end-to-end figures the plots compare, idle and loaded.
E2E_PERCENTILES = (50, 90, 99, 99.9)


def _under_load(
    dsn: str, cfg: Config, achieved: Figure, one_round: Callable[[], LatencyRun]
) -> list[LatencyRun]:
    """Rounds of ``one_round`` while a paced publisher sends LOAD_PER_SECOND messages/s to an
    async subscriber nobody consumes; the rate it reached goes into ``achieved``."""
    # The load is 1,000 messages/s in transactions of 10: one message per transaction
    # tops out below 1,000/s on a small machine (see 1. Publish), and the load must be
    # the rate the issue names, or the figure would say less than its title.
    runs = []
    for _ in range(cfg.repeat):
        with Publisher(dsn, float(LOAD_PER_SECOND), LOAD_BATCH) as load:
            time.sleep(1.0)
            runs.append(one_round())
        achieved.rounds.append(load.sent / load.seconds)
    return runs


def _load_rate_figure(key: str, group: str, title: str) -> Figure:
    return Figure(
        key,
        group,
        title,
        "msg/s",
        "rate",
        note=f"target load {LOAD_PER_SECOND:,} msg/s in transactions of {LOAD_BATCH} "
        f"({LOAD_PER_SECOND // LOAD_BATCH} commits/s), one client, to an async subscriber",
    )


def latency(dsn: str, cfg: Config) -> list[Figure]:
    server.reset(dsn)
    subscribe_async(dsn, ("bench-e2e",), "bench.e2e")
    with Client(dsn, max_size=1) as c:
        c.subscribe("bench-notify", "notify", message_type="bench.notify", notify_channel="bench_notify")
        c.subscribe("bench-load", "async", message_type="bench.load")
    samples = cfg.n(400, 20)
    # p99.9 needs a thousand samples to be more than the largest one.
    e2e_samples = cfg.n(1000, 20)

    def e2e_round() -> LatencyRun:
        return _latency_run(dsn, _w_idle_consumer, ("bench-e2e",), "bench.e2e", e2e_samples, 0.01)

    group = "4. End-to-end latency"
    title = "Publish to idle consumer woken by LISTEN (claim returned)"
    figures = _latency_figures(
        "latency.e2e", group, title, [e2e_round() for _ in range(cfg.repeat)], E2E_PERCENTILES
    )
    e2e_load = _load_rate_figure(
        "latency.e2e.loaded_1000.rate", group, "Background publish rate during the loaded end-to-end run"
    )
    figures += _latency_figures(
        "latency.e2e.loaded_1000",
        group,
        f"{title}, under a 1,000 msg/s publish load",
        _under_load(dsn, cfg, e2e_load, e2e_round),
        E2E_PERCENTILES,
    )
    figures.append(e2e_load)
    with FanOut(dsn):
        figures += _latency_figures(
            "latency.e2e_deferred",
            group,
            "Deferred publish to idle consumer woken by LISTEN (fan-out worker polling every 10 ms)",
            [
                _latency_run(dsn, _w_idle_consumer, ("bench-e2e",), "bench.e2e", samples, 0.01, deferred=True)
                for _ in range(cfg.repeat)
            ],
        )

    def notify_round() -> LatencyRun:
        return _latency_run(dsn, _w_notify_listener, ("bench_notify",), "bench.notify", samples, 0.01)

    figures += _latency_figures(
        "latency.notify_idle",
        "5. NOTIFY latency",
        "NOTIFY subscription, idle server",
        [notify_round() for _ in range(cfg.repeat)],
    )
    achieved = _load_rate_figure(
        "latency.notify_load.rate",
        "5. NOTIFY latency",
        "Background publish rate during the loaded NOTIFY run",
    )
    figures += _latency_figures(
        "latency.notify_load",
        "5. NOTIFY latency",
        "NOTIFY subscription, under a 1,000 msg/s publish load",
        _under_load(dsn, cfg, achieved, notify_round),
    )
    figures.append(achieved)
    return figures


# -- 6. HTTP push ------------------------------------------------------------------------


def _free_port() -> int:
    """A port nothing listens on now, so that concurrent bench runs (on other
    server ports) do not meet at one receiver."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Is an http delivery still to be pushed or recorded? (message_delivery_http_due_idx)
HTTP_UNFINISHED = (
    "SELECT 1 FROM message_delivery WHERE delivery_mode = 'http' "
    "AND status IN ('pending', 'processing') LIMIT 1"
)


def _w_receiver(port: int, secret: str, delay: float, ready: Any, stop: Any, out: Any) -> None:
    """The sample receiver (verifies every signature, dedupes by webhook-id), optionally slow."""
    from pgmsg.webhook_receiver import WebhookReceiver

    receiver = WebhookReceiver(
        [secret], "127.0.0.1", port, on_event=(lambda *_: time.sleep(delay)) if delay else None
    )
    receiver.history_limit = 10_000_000
    with receiver:
        ready.set()
        while not stop.is_set():  # polled: see _w_idle_consumer
            time.sleep(0.05)
    out.put(dict(receiver.counters))


def _w_dispatcher(dsn: str, per_subscription: int, workers: int, ready: Any, stop: Any) -> None:
    from pgmsg.workers.dispatcher import Dispatcher

    halt = _halted_by(stop)
    dispatcher = Dispatcher(dsn, name="bench", workers=workers, per_subscription=per_subscription)
    ready_local = threading.Event()
    threading.Thread(target=lambda: (ready_local.wait(), ready.set()), daemon=True).start()
    try:
        dispatcher.run(halt, ready=ready_local)
    finally:
        dispatcher.close()


class Processes:
    """A receiver and a dispatcher in their own processes, stopped together."""

    def __init__(
        self,
        dsn: str,
        secret: str,
        port: int,
        delay: float = 0.0,
        per_subscription: int = 16,
        workers: int = 16,
    ) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.counters = ctx.Queue()
        receiver_ready, dispatcher_ready = ctx.Event(), ctx.Event()
        self.procs = [
            ctx.Process(
                target=_w_receiver,
                args=(port, secret, delay, receiver_ready, self.stop, self.counters),
                daemon=True,
            ),
        ]
        self.procs[0].start()
        if not receiver_ready.wait(30):
            raise RuntimeError("the webhook receiver did not start")
        self.procs.append(
            ctx.Process(
                target=_w_dispatcher,
                args=(dsn, per_subscription, workers, dispatcher_ready, self.stop),
                daemon=True,
            )
        )
        self.procs[1].start()
        if not dispatcher_ready.wait(30):
            raise RuntimeError("the dispatcher did not start")
        self.dispatcher_ready_at = time.monotonic()

    def close(self) -> dict[str, int]:
        self.stop.set()
        counters = self.counters.get(timeout=30)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        return counters


def _webhook_rate(dsn: str, url: str, port: int, count: int, slots: int) -> float:
    """Webhooks/s of one dispatcher with ``slots`` requests in flight (workers and per_subscription),
    timed from its readiness until none of a backlog of ``count`` is left."""
    server.reset(dsn)
    with Client(dsn, max_size=1) as c:
        secret = c.subscribe(
            "bench-hook", "http", message_type="bench.hook", webhook_url=url, http_timeout_ms=10_000
        ).signing_secret
    prefill(dsn, "bench.hook", count)
    procs = Processes(dsn, secret or "", port, per_subscription=slots, workers=slots)
    # From readiness: starting a Python process is not pushing (about a second here).
    start = procs.dispatcher_ready_at
    try:
        deadline = time.monotonic() + 600
        # One connection and an index-backed probe: a new connection per poll
        # (password authentication, a backend started) every 20 ms cost the
        # server about as much CPU as the claims did on this two-core machine.
        with psycopg.connect(dsn, autocommit=True) as conn:
            while conn.execute(HTTP_UNFINISHED).fetchone() and time.monotonic() < deadline:
                time.sleep(0.02)
        elapsed = time.monotonic() - start
    finally:
        counters = procs.close()
    if counters["accepted"] != count:
        raise RuntimeError(f"the receiver accepted {counters['accepted']} of {count} webhooks: {counters}")
    return rate(count, elapsed)


def http_push(dsn: str, cfg: Config) -> list[Figure]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/webhook"
    common = (
        "one subscription; the receiver (pgmsg.webhook_receiver) verifies each signature; backlog "
        "published first, timed from the dispatcher's readiness (its process started, LISTEN open) "
        "until none is left"
    )
    throughput = Figure(
        "http.webhooks",
        "6. HTTP push",
        "Signed webhooks pushed to a verifying local receiver",
        "webhooks/s",
        "rate",
        note=f"dispatcher with 16 workers and per_subscription=16; {common}",
    )
    wide = Figure(
        "http.webhooks.32_slots",
        "6. HTTP push",
        "Signed webhooks pushed to a verifying local receiver, 32 requests in flight",
        "webhooks/s",
        "rate",
        note="as above, with 32 workers and per_subscription=32",
    )
    count = cfg.n(5000, 200)
    for _ in range(cfg.repeat):
        throughput.rounds.append(_webhook_rate(dsn, url, port, count, 16))
        wide.rounds.append(_webhook_rate(dsn, url, port, count, 32))

    none = Figure(
        "http.publish_p99.none",
        "6. HTTP push",
        "Publish p99, 3 async subscribers, no webhook subscriber",
        "ms",
        "latency",
    )
    slow = Figure(
        "http.publish_p99.slow",
        "6. HTTP push",
        "Publish p99, 3 async subscribers plus a webhook whose endpoint takes 2 s",
        "ms",
        "latency",
        note="dispatcher running throughout; rounds alternate between the two cases",
    )
    server.reset(dsn)
    subscribe_async(dsn)
    with Client(dsn, max_size=1) as c:
        secret = c.subscribe(
            "bench-slow", "http", message_type=PUBLISH_TYPE, webhook_url=url, http_timeout_ms=5_000
        ).signing_secret
    procs = Processes(dsn, secret or "", port, delay=2.0, per_subscription=4)
    try:
        samples = cfg.n(2000, 100)
        for _ in range(cfg.repeat):
            for active, fig in ((False, none), (True, slow)):
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(
                        "UPDATE subscriptions SET active = %s WHERE client_id = 'bench-slow'", (active,)
                    )
                _, (lat,) = parallel(_w_publish, [(dsn, samples, PUBLISH_TYPE)])
                fig.rounds.append(percentile(lat, 99) * 1000)
    finally:
        procs.close()
    return [throughput, wide, none, slow]


# -- 7. growth -------------------------------------------------------------------------------


def _grow_to(dsn: str, total: int) -> None:
    """Add history until ``total`` messages exist, each with one delivered delivery.

    One statement per million rows writes the messages and their deliveries together: the
    fan-out is bypassed by making the subscription inactive meanwhile (a delivery is then
    written as delivered, not written pending and updated, which left as many dead rows)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        have = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        if have >= total:
            return
        (sub,) = conn.execute(
            "UPDATE subscriptions SET active = false WHERE client_id = 'bench-growth' RETURNING id"
        ).fetchone()
        body = json.dumps(PAYLOAD)
        try:
            while have < total:
                step = min(1_000_000, total - have)
                conn.execute(
                    "WITH m AS (INSERT INTO messages (message_type, namespace, payload) "
                    "SELECT %s, 'default', %s::jsonb FROM generate_series(1, %s) RETURNING id, created_at) "
                    "INSERT INTO message_delivery (message_id, subscription_id, client_id, delivery_mode, "
                    "status, created_at, claimed_at, delivered_at, attempts) "
                    "SELECT id, %s, 'bench-growth', 'async', 'delivered', created_at, now(), now(), 1 FROM m",
                    (PUBLISH_TYPE, body, step, sub),
                )
                have += step
        finally:
            conn.execute("UPDATE subscriptions SET active = true WHERE id = %s", (sub,))
        conn.execute("VACUUM ANALYZE messages")
        conn.execute("VACUUM ANALYZE message_delivery")
        conn.execute("CHECKPOINT")


def size_label(size: int) -> str:
    """10_000 -> "10k", 10_000_000 -> "10m": the key suffix of a size."""
    for unit, letter in ((1_000_000, "m"), (1_000, "k")):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{letter}"
    return str(size)


def size_of_label(label: str) -> int:
    """The inverse of size_label, for the plots."""
    scale = {"m": 1_000_000, "k": 1_000}.get(label[-1:], 1)
    return int(label[:-1] if scale > 1 else label) * scale


#: The growth sizes, full and smoke (the smoke sizes stand in for the full ones' keys).
GROWTH_SIZES = ((10_000, 1_000), (100_000, 2_000), (1_000_000, 5_000), (10_000_000, 8_000))


def growth_sizes(cfg: Config) -> list[tuple[int, str]]:
    """(rows, key label) per size measured: up to and including cfg.growth_max."""
    if cfg.smoke:
        return [(smoke, size_label(full)) for full, smoke in GROWTH_SIZES]
    sizes = [full for full, _ in GROWTH_SIZES if full < cfg.growth_max] + [cfg.growth_max]
    return [(size, size_label(size)) for size in sizes]


def _publish_and_claim(dsn: str, count: int, backlog: int, publish_fig: Figure, claim_fig: Figure) -> None:
    """Time ``count`` single publishes, then the claim and ack of a ``backlog`` of deliveries
    (the rest published in batches: a claim round of a few hundred milliseconds measured
    mostly this machine's noise, a fifth either way between consecutive rounds)."""
    elapsed, _ = parallel(_w_publish, [(dsn, count, PUBLISH_TYPE)])
    publish_fig.rounds.append(rate(count, elapsed))
    prefill(dsn, PUBLISH_TYPE, backlog - count)
    elapsed, (done,) = parallel(_w_consume, [(dsn, "bench-growth", 100)])
    if done != backlog:
        raise RuntimeError(f"claimed {done} of {backlog} deliveries")
    claim_fig.rounds.append(rate(backlog, elapsed))


def growth(dsn: str, cfg: Config) -> list[Figure]:
    count, backlog = cfg.n(3000, 100), cfg.n(10_000, 200)
    server.reset(dsn)
    subscribe_async(dsn, ("bench-growth",))
    figures = []
    sizes = growth_sizes(cfg)
    for size, label in sizes:
        _grow_to(dsn, size)
        pub = Figure(
            f"growth.publish.{label}",
            "7. Growth",
            f"Publish, 1 client, with {size:,} messages and deliveries",
            "msg/s",
            "rate",
        )
        claim = Figure(
            f"growth.claim.{label}",
            "7. Growth",
            f"Claim + ack, batch 100, with {size:,} messages and deliveries",
            "deliveries/s",
            "rate",
        )
        for _ in range(cfg.repeat):
            _publish_and_claim(dsn, count, backlog, pub, claim)
        figures += [pub, claim]
    large = sizes[-1][0]

    pub = Figure(
        "growth.publish.rr_held",
        "7. Growth",
        f"Publish while a REPEATABLE READ transaction is open (from {large:,} rows)",
        "msg/s",
        "rate",
    )
    claim = Figure(
        "growth.claim.rr_held",
        "7. Growth",
        "Claim + ack, batch 100, while a REPEATABLE READ transaction is open",
        "deliveries/s",
        "rate",
        note="the reader holds its snapshot through every round, so nothing it could see is "
        "vacuumed; rounds are consecutive, so later ones carry more dead rows",
    )
    with psycopg.connect(dsn) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM message_delivery").fetchone()
        for _ in range(cfg.repeat):
            _publish_and_claim(dsn, count, backlog, pub, claim)
        reader.rollback()
    figures += [pub, claim]
    return figures
