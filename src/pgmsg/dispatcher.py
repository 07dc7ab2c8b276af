"""The HTTP push dispatcher: delivers webhooks after the publisher has committed.

Why a service woken by LISTEN rather than a pg_cron job: pg_cron runs at most
once a second and serially inside the database, so every webhook would wait up
to a second and one slow endpoint would hold up the job. The dispatcher wakes
on NOTIFY pgmsg_http within milliseconds of the commit, pushes concurrently
(on one asyncio event loop, see pgmsg.webhook_http), and caps the requests in
flight per subscription, so a slow or dead endpoint occupies at most that many
request slots while the others go on. Retries, backoff, dead letters and 410
handling are decided in SQL (pgmsg_record_http_attempt), the same rules for
every dispatcher. Claims are
leases: a dispatcher that dies mid-request loses nothing, its deliveries are
claimable again when the lease lapses. A push is recorded only under the lease
token its claim returned, so a dispatcher whose lease passed on cannot change
what the current holder records, and a request is not started when too little
of the lease is left for it (the delivery is given back instead). Ordered
subscriptions get one delivery per key at a time from the claim itself.

Outcomes are recorded by one thread, many per transaction
(pgmsg_record_http_attempts): whatever finished while the previous batch was
being written goes into the next, so an idle dispatcher records each push at
once and a busy one pays one commit for many webhooks instead of one each.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgmsg import metrics
from pgmsg.client import DEFAULT_CONNECT_TIMEOUT, Listener, with_connect_timeout
from pgmsg.errors import ConnectionFailed, InvalidInput, PgmsgError, translated
from pgmsg.ssrf import Allowlist, BlockedTarget, check_url
from pgmsg.webhook_http import NoAnswer, WebhookClient

log = logging.getLogger("pgmsg.dispatcher")


#: Pause between attempts to reach the database again from a push worker.
RECONNECT_PAUSE_SECONDS = 0.5

#: Most pushes recorded in one transaction.
RECORD_BATCH = 500

# Records finished pushes, each under the lease token its claim returned: a push
# whose lease lapsed and passed on (another push, a dead letter) is not recorded
# (status NULL), and neither is one recorded already, so the statement may be
# repeated after a connection lost during a call that committed just before its
# answer was lost.
RECORD = ("SELECT delivery_id, status FROM pgmsg_record_http_attempts(%(ids)s::bigint[], %(tokens)s::uuid[],"
          " %(codes)s::integer[], %(errors)s::text[], %(durations)s::numeric[], %(retry_after)s::float8[])")

# Gives back deliveries claimed but never requested, as if never claimed (the
# attempt undone), where this dispatcher still holds their lease.
GIVE_BACK = ("UPDATE message_delivery d SET status = 'pending', attempts = d.attempts - 1, lease_expires_at = NULL,"
             " lease_token = NULL, updated_at = now()"
             " FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS g(id, token)"
             " WHERE d.id = g.id AND d.status = 'processing' AND d.lease_token = g.token RETURNING d.id")


@dataclass
class _Finished:
    """A push made, waiting for its outcome to be recorded."""

    row: dict[str, Any]
    code: int | None
    error: str | None
    duration_ms: float
    retry_after: float | None
    record_until: float          # time.monotonic() by which it must be recorded (the lease)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Dispatcher:
    """Pushes due HTTP deliveries; run() until stopped, or dispatch_once() for one round."""

    def __init__(
        self,
        conninfo: str,
        *,
        name: str | None = None,
        workers: int = 16,
        per_subscription: int = 4,
        batch: int = 100,
        lease_seconds: int = 120,
        idle_poll_seconds: float = 1.0,
        resolve: Callable[[str, int], list[str]] | None = None,
        ca_file: str | None = None,
    ) -> None:
        # A zero leaves no request slot (nothing is ever pushed, silently); a lease of
        # 0 lapses at once, so another dispatcher would send the same webhook-id too.
        for setting, value, low, high in (("workers", workers, 1, 10_000),
                                          ("per_subscription", per_subscription, 1, 10_000),
                                          ("batch", batch, 1, 100_000),
                                          ("lease_seconds", lease_seconds, 1, 43_200),
                                          ("idle_poll_seconds", idle_poll_seconds, 0.001, 3_600)):
            if not low <= value <= high:    # NaN fails every comparison
                raise InvalidInput(f"dispatcher setting {setting}={value!r} is out of range: give {low} to {high}"
                                   + (" (well above the longest http_timeout_ms, at most 60 s)"
                                      if setting == "lease_seconds" else ""))
        self.conninfo = with_connect_timeout(conninfo, DEFAULT_CONNECT_TIMEOUT)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.per_subscription = per_subscription
        #: Deliveries claimed per subscription beyond its request slots: they wait in the
        #: dispatcher, so a finished request is followed at once by the next instead of by a
        #: claim's round trip (which, under load, took longer than a request).
        self.claim_ahead = per_subscription
        # Per subscription, its request slots (used on the event loop only).
        self._slots: dict[int, asyncio.Semaphore] = {}
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.idle_poll_seconds = idle_poll_seconds
        self.resolve = resolve
        # Every request runs on one event loop, in a thread of its own; at most
        # ``workers`` at a time (the others wait for a slot, claimed).
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="pgmsg-push", daemon=True)
        self._loop_thread.start()
        self._requests = asyncio.Semaphore(workers)
        self._pushes: set[Future[None]] = set()
        # Per subscription, requests claimed and not yet finished: what the cap counts.
        self._inflight: Counter[int] = Counter()
        self._inflight_ids: set[int] = set()   # deliveries claimed, not yet recorded
        self._lock = threading.Lock()
        # Set whenever a push finishes: a request slot is free again.
        self._slot_freed = threading.Event()
        # Finished pushes for the recorder thread, which is started with the first.
        self._finished: list[_Finished] = []
        # Claimed deliveries whose lease ran out while they waited for a request slot,
        # to be given back unsent (by the recorder thread too).
        self._unsent: list[dict[str, Any]] = []
        self._finished_ready = threading.Condition(self._lock)
        self._recorder: threading.Thread | None = None
        self._closing = False
        self._local = threading.local()
        self._http = WebhookClient(ca_file)
        #: With requests in flight, how often new work is looked for (see _wait_for_work).
        self.busy_poll_seconds = 0.05
        #: After a request finishes while others are still in flight, how long to let more
        #: finish before claiming their slots again (see _wait_for_work).
        self.gather_seconds = 0.005
        self._allowlist: Allowlist | None = None
        self._allowlist_read = 0.0
        self.pushed = 0
        #: Pushes whose record was not applied: their lease had passed on (see record).
        self.lost_leases = 0
        #: Claimed deliveries given back unsent: their lease ran out waiting for a slot.
        self.given_back = 0

    # -- database ---------------------------------------------------------------

    def _conn(self) -> psycopg.Connection[Any]:
        """One connection per worker thread, replaced when it broke."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self.conninfo, autocommit=True, row_factory=dict_row)
            self._local.conn = conn
        return conn

    def _drop_conn(self) -> None:
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None:
            conn.close()

    def _fetch(self, action: str, query: str, params: dict[str, Any] | None = None, *,
               retry_until: float = 0.0) -> list[dict[str, Any]]:
        """Run one statement on this thread's connection and return its rows.

        A push worker's connection can die while the worker is idle (the database
        restarted), which only shows when it is next used: the connection is then
        replaced and the statement tried again at once, and after that every
        RECONNECT_PAUSE_SECONDS until ``retry_until`` (time.monotonic()) while the
        database is still unreachable; then ConnectionFailed is raised. A statement
        run here must be safe to apply twice (a call may commit just before its
        answer is lost): reads are, and records and give-backs are through the
        lease tokens they name.
        """
        retries = 0
        while True:
            try:
                with translated(action):
                    return self._conn().execute(query, params).fetchall()
            except ConnectionFailed:
                self._drop_conn()
                retries += 1
                if retries > 1:
                    if time.monotonic() + RECONNECT_PAUSE_SECONDS > retry_until:
                        raise
                    time.sleep(RECONNECT_PAUSE_SECONDS)

    def allowlist(self) -> Allowlist:
        """The webhook allowlist from the database, re-read every 30 seconds."""
        if self._allowlist is None or time.monotonic() - self._allowlist_read > 30:
            rows = self._fetch("reading the webhook allowlist", "SELECT entry FROM pgmsg_webhook_allowlist")
            blocked = [(r["network"], r["reason"]) for r in self._fetch(
                "reading the blocked networks", "SELECT network::text AS network, reason FROM pgmsg_blocked_networks")]
            # An entry the database holds but the parser refuses (written into the table by
            # hand, or by an older release) is left out with a logged error: refusing the
            # whole list would give every claim back and claim again for ever.
            entries: list[str] = []
            for row in rows:
                try:
                    Allowlist.parse([row["entry"]], blocked)
                except InvalidInput as exc:
                    log.error("ignoring webhook allowlist entry %r: %s", row["entry"], exc)
                else:
                    entries.append(row["entry"])
            self._allowlist = Allowlist.parse(entries, blocked)
            self._allowlist_read = time.monotonic()
        return self._allowlist

    def heartbeat(self) -> None:
        self._conn().execute(
            "INSERT INTO pgmsg_dispatchers (name, pushed) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET last_seen = now(), pushed = EXCLUDED.pushed",
            (self.name, self.pushed),
        )

    # -- dispatching ------------------------------------------------------------

    def dispatch_once(self) -> int:
        """Claim due deliveries and hand them to the workers; returns how many were claimed.

        A subscription gets at most per_subscription + claim_ahead deliveries
        claimed by this dispatcher and not finished; at most per_subscription of
        them are being requested at a time.
        """
        with self._lock:
            busy = {sub: n for sub, n in self._inflight.items() if n > 0}
        with translated("claiming HTTP deliveries"):
            rows = self._conn().execute(
                "SELECT * FROM pgmsg_claim_http_slots(%s, %s, %s, %s, %s::bigint[], %s::integer[])",
                (self.batch, self.per_subscription + self.claim_ahead, self.name, self.lease_seconds,
                 list(busy), list(busy.values())),
            ).fetchall()
        # The outcome of a push must be recorded while the claim holds: a push
        # recorded after its lease lapsed could collide with another dispatcher's.
        if not rows:
            return 0
        record_until = time.monotonic() + self.lease_seconds * 0.8
        allowlist = self.allowlist()
        for row in rows:
            with self._lock:
                self._inflight[row["subscription_id"]] += 1
                self._inflight_ids.add(row["delivery_id"])
            pushing = asyncio.run_coroutine_threadsafe(self._push_and_record(row, record_until, allowlist),
                                                       self._loop)
            with self._lock:
                self._pushes.add(pushing)
            pushing.add_done_callback(self._pushes_done)
        return len(rows)

    def _pushes_done(self, pushing: Future[None]) -> None:
        with self._lock:
            self._pushes.discard(pushing)

    async def _push_and_record(self, row: dict[str, Any], record_until: float, allowlist: Allowlist) -> None:
        finished = None
        unsent = False
        subscription = row["subscription_id"]
        slots = self._slots.get(subscription)
        if slots is None:
            slots = self._slots[subscription] = asyncio.Semaphore(self.per_subscription)
        try:
            # The subscription's slot first: a delivery waiting for a slow endpoint
            # must not hold one of the workers other endpoints need.
            async with slots, self._requests:
                # The request must end, and be recorded, while the claim holds: one
                # started later could still be under way when the lease lapses and
                # another push takes the delivery (the same webhook-id twice at once;
                # its record would then not apply). So a delivery that waited for its
                # slot that long is given back unsent, to be claimed again.
                if time.monotonic() + row["http_timeout_ms"] / 1000.0 > record_until:
                    unsent = True
                else:
                    code, error, duration_ms, retry_after = await self._push(row, allowlist)
                    finished = _Finished(row, code, error, duration_ms, retry_after, record_until)
        except Exception:  # the loop must go on; the lease returns the delivery
            log.exception("pushing delivery %s failed unexpectedly", row["delivery_id"])
        finally:
            with self._lock:
                self._inflight[subscription] -= 1
                if self._inflight[subscription] <= 0:
                    del self._inflight[subscription]
                    self._slots.pop(subscription, None)  # nothing of it left waiting
                if unsent:
                    self._unsent.append(row)
                    self._start_recorder()
                    self._finished_ready.notify()
                elif finished is None:
                    self._inflight_ids.discard(row["delivery_id"])
                else:
                    # The request was made: if its outcome is not recorded, the
                    # delivery waits for its whole lease and is pushed again.
                    self._finished.append(finished)
                    self._start_recorder()
                    self._finished_ready.notify()
            self._slot_freed.set()

    def _start_recorder(self) -> None:
        """Start the recording thread if it is not running (called with the lock held)."""
        if self._recorder is None or not self._recorder.is_alive():
            self._recorder = threading.Thread(target=self._record_loop, name="pgmsg-record", daemon=True)
            self._recorder.start()

    def _record_loop(self) -> None:
        """Record finished pushes, as many per transaction as finished meanwhile, until closed."""
        while True:
            with self._lock:
                while not self._finished and not self._unsent and not self._closing:
                    self._finished_ready.wait()
                if not self._finished and not self._unsent:
                    return
                batch, self._finished = self._finished[:RECORD_BATCH], self._finished[RECORD_BATCH:]
                unsent, self._unsent = self._unsent, []
            try:
                if unsent:
                    self.give_back(unsent)
                if batch:
                    self.record(batch)
            except Exception:  # the thread must survive; unrecorded pushes wait for their lease
                log.exception("recording %d pushes failed unexpectedly", len(batch))
                with self._lock:
                    self._inflight_ids.difference_update(f.row["delivery_id"] for f in batch)
                    self._inflight_ids.difference_update(row["delivery_id"] for row in unsent)

    def record(self, batch: list[_Finished]) -> None:
        """Record the outcomes of finished pushes in one transaction.

        A connection lost meanwhile (the database restarted) is replaced and the
        record retried until shortly before the first lease lapses (see _fetch);
        the retry records only what is still claimed for that push. If the batch
        fails for another reason, each push is recorded on its own, so one bad
        row cannot hold back the others.
        """
        try:
            outcomes = self._record_rows(batch)
        except ConnectionFailed:
            log.error("could not record %d pushes: the database is unreachable; they will be pushed "
                      "again when their leases lapse", len(batch))
            outcomes = {}
        except PgmsgError:
            outcomes = {}
            if len(batch) == 1:
                log.exception("recording the push of delivery %s failed", batch[0].row["delivery_id"])
            else:
                for one in batch:
                    try:
                        outcomes.update(self._record_rows([one]))
                    except PgmsgError:
                        log.exception("recording the push of delivery %s failed", one.row["delivery_id"])
        lost = sorted(delivery_id for delivery_id, status in outcomes.items() if status is None)
        for status in outcomes.values():
            metrics.webhooks_pushed.labels(status or "lease_lost").inc()
        if lost:
            # The delivery was released, claimed again or made a dead letter meanwhile:
            # its current state is the current holder's, and this outcome is dropped.
            log.warning("%d pushes not recorded: their lease had passed on (deliveries %s)",
                        len(lost), ", ".join(map(str, lost[:20])))
        with self._lock:
            self.pushed += len(outcomes) - len(lost)
            self.lost_leases += len(lost)
            self._inflight_ids.difference_update(f.row["delivery_id"] for f in batch)

    def _record_rows(self, batch: list[_Finished]) -> dict[int, str | None]:
        params = {"ids": [f.row["delivery_id"] for f in batch], "tokens": [f.row["lease_token"] for f in batch],
                  "codes": [f.code for f in batch], "errors": [f.error for f in batch],
                  "durations": [f.duration_ms for f in batch], "retry_after": [f.retry_after for f in batch]}
        what = (f"recording the push of delivery {batch[0].row['delivery_id']}" if len(batch) == 1
                else f"recording {len(batch)} pushes")
        rows = self._fetch(what, RECORD, params, retry_until=min(f.record_until for f in batch))
        return {r["delivery_id"]: r["status"] for r in rows}

    def give_back(self, rows: list[dict[str, Any]]) -> int:
        """Give back claimed deliveries that were not requested: pending again, the attempt undone.

        Only where this dispatcher still holds the lease; one that passed on is
        left to its holder. Returns how many were given back.
        """
        params = {"ids": [r["delivery_id"] for r in rows], "tokens": [r["lease_token"] for r in rows]}
        try:
            given = self._fetch(f"giving back {len(rows)} unsent deliveries", GIVE_BACK, params,
                                retry_until=time.monotonic() + 5)
        except PgmsgError:
            # Their leases have run out or are about to: they are claimable again anyway.
            log.exception("giving back %d unsent deliveries failed", len(rows))
            given = []
        log.warning("%d deliveries waited for a request slot until too little of their lease was left; "
                    "given back unsent: %d (lease_seconds must exceed the endpoints' http_timeout_ms)",
                    len(rows), len(given))
        with self._lock:
            self.given_back += len(given)
            self._inflight_ids.difference_update(r["delivery_id"] for r in rows)
        return len(given)

    def release_orphaned_claims(self) -> int:
        """Give back the deliveries claimed under this dispatcher's name that it is not pushing.

        When the connection breaks during a claim (the database restarted), the claim
        may have committed without its rows ever reaching us: those deliveries would
        wait for their whole lease (lease_seconds) before anyone pushed them. They were
        never pushed, so they go back to pending with that attempt undone. Run when
        the dispatcher (re)connects; names must be unique among running dispatchers
        (the default, host:pid, is). Returns how many were given back.
        """
        with self._lock:
            inflight = list(self._inflight_ids)
        rows = self._fetch(
            "releasing orphaned claims",
            "UPDATE message_delivery SET status = 'pending', attempts = attempts - 1, lease_expires_at = NULL,"
            " lease_token = NULL, updated_at = now() WHERE delivery_mode = 'http' AND status = 'processing' AND claimed_by = %(name)s"
            " AND NOT (id = ANY(%(inflight)s::bigint[])) RETURNING id",
            {"name": self.name, "inflight": inflight},
        )
        if rows:
            log.warning("released %d deliveries claimed by %s before its connection was lost",
                        len(rows), self.name)
        return len(rows)

    def inflight(self) -> int:
        """Requests claimed and not finished yet (being made, or waiting for a worker)."""
        with self._lock:
            return sum(self._inflight.values())

    def push(self, row: dict[str, Any]) -> tuple[int | None, str | None, float, float | None]:
        """POST one claimed delivery now (not recorded); see _push."""
        allowlist = self.allowlist()
        return asyncio.run_coroutine_threadsafe(self._push(row, allowlist), self._loop).result()

    async def _push(self, row: dict[str, Any], allowlist: Allowlist
                    ) -> tuple[int | None, str | None, float, float | None]:
        """POST one delivery; returns (status code, error, duration in ms, Retry-After seconds)."""
        started = time.monotonic()
        body = row["body"].encode()
        url = row["webhook_url"]
        try:
            addresses = await self._checked_addresses(url, allowlist)
        except (BlockedTarget, PgmsgError) as exc:
            return None, f"refused: {exc}", 0.0, None
        # The contract's headers, signed by the claim (pgmsg_webhook_headers, migration 028).
        headers = dict(row["headers"])
        try:
            # To the address just checked, not a new lookup of the name (DNS rebinding).
            answer = await self._http.post(url, addresses[0], headers, body, row["http_timeout_ms"] / 1000.0)
        except NoAnswer as exc:
            return None, str(exc)[:2000], _ms(started), None
        duration = _ms(started)
        error = None
        if not 200 <= answer.status < 300:
            error = f"HTTP {answer.status}: {answer.body[:500].decode(errors='replace')}"
        return answer.status, error, duration, parse_retry_after(answer.headers.get("retry-after"))

    async def _checked_addresses(self, url: str, allowlist: Allowlist) -> list[str]:
        """check_url, on the loop when the host is an address, in a thread when it needs a lookup."""
        try:
            return check_url(url, allowlist, resolve=_lookup_elsewhere)
        except _NeedsLookup:
            return await self._loop.run_in_executor(
                None, functools.partial(check_url, url, allowlist, resolve=self.resolve))

    def run(self, stop: threading.Event, *, ready: threading.Event | None = None) -> None:
        """Dispatch until ``stop`` is set, sleeping on LISTEN pgmsg_http when idle."""
        last_beat = 0.0
        while not stop.is_set():
            try:
                with Listener(self.conninfo, ["pgmsg_http"]) as wake:
                    self.release_orphaned_claims()
                    if ready is not None:
                        ready.set()
                    while not stop.is_set():
                        if time.monotonic() - last_beat > 5:
                            self.heartbeat()
                            last_beat = time.monotonic()
                        self._slot_freed.clear()
                        if self.dispatch_once() >= self.batch:
                            continue  # the claim was full: more may be due already
                        self._wait_for_work(wake, stop)
            except (PgmsgError, psycopg.Error) as exc:
                # Database restarts are expected: reconnect after a pause.
                log.warning("dispatcher lost the database (%s); reconnecting", exc)
                self._local.conn = None
                stop.wait(1.0)

    def _wait_for_work(self, wake: Listener, stop: threading.Event) -> None:
        """Wait until claiming again may find something: everything claimable was just claimed.

        Idle, that is when work is announced (NOTIFY pgmsg_http) or, for retries
        falling due and lapsed leases, after idle_poll_seconds. With requests in
        flight, also when one finishes (its slot is free again; gather_seconds
        later while others are still in flight, so that one claim fills several
        slots). A publish
        to a subscription with requests in flight announces nothing (migration
        011): while an endpoint is slow and at its cap, a wake-up per publish
        would only take CPU from the publishers. So while some subscription with
        requests in flight still has free slots, new work for it is looked for
        every busy_poll_seconds; while all are at their cap, nothing is claimed
        until a slot frees or another subscription announces work.
        """
        if not self.inflight():
            for _ in wake.notifications(timeout=self.idle_poll_seconds, limit=1, raw=True):
                pass
            return
        deadline = time.monotonic() + self.idle_poll_seconds
        while not stop.is_set():
            if self._slot_freed.wait(self.busy_poll_seconds):
                # Under load requests finish one by one, and a claim after each
                # cost a claim transaction per webhook (bench "6. HTTP push").
                # While others are still in flight, let a few more finish first:
                # gather_seconds bounds the delay this adds to a freed slot.
                if self.inflight():
                    stop.wait(self.gather_seconds)
                return
            announced = False
            for _ in wake.notifications(timeout=0.001, raw=True):  # drain
                announced = True
            if announced or time.monotonic() >= deadline or not self._all_at_cap():
                return

    def _all_at_cap(self) -> bool:
        """Whether every subscription with requests in flight has all it may have claimed."""
        with self._lock:
            return all(n >= self.per_subscription + self.claim_ahead for n in self._inflight.values())

    def close(self) -> None:
        """Finish the pushes already claimed, record them, and release the connections."""
        while True:
            with self._lock:
                pushes = list(self._pushes)
            if not pushes:
                break
            wait(pushes)  # their failures are logged by _push_and_record
        with self._lock:
            self._closing = True
            self._finished_ready.notify_all()
            recorder = self._recorder
        if recorder is not None:
            recorder.join()
        self._loop.call_soon_threadsafe(self._http.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=10)
        if not self._loop_thread.is_alive():
            self._loop.close()


class _NeedsLookup(Exception):
    """Raised by _lookup_elsewhere: the URL names a host, whose lookup must not block the loop."""


def _lookup_elsewhere(host: str, port: int) -> list[str]:
    raise _NeedsLookup(host)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


def main(argv: list[str] | None = None) -> int:
    """pgmsg-dispatcher: push webhooks until SIGTERM/SIGINT. Connection from PGMSG_DSN or PG*."""
    import argparse
    import signal

    from pgmsg.config import conninfo_from_env
    from pgmsg.logs import configure_logging

    parser = argparse.ArgumentParser(prog="pgmsg-dispatcher", description=main.__doc__)
    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{value} is not a positive number")
        return value

    parser.add_argument("--workers", type=positive, default=16, help="concurrent requests in all (default 16)")
    parser.add_argument("--per-subscription", type=positive, default=4,
                        help="concurrent requests per subscription, so one slow endpoint cannot take every worker")
    parser.add_argument("--name", default=os.environ.get("PGMSG_DISPATCHER_NAME") or None,
                        help="name in pgmsg_dispatchers (default PGMSG_DISPATCHER_NAME, else host:pid)")
    parser.add_argument("--ca-file", default=os.environ.get("PGMSG_WEBHOOK_CA_FILE") or None,
                        help="PEM file of CAs trusted for https endpoints besides the system's "
                             "(default PGMSG_WEBHOOK_CA_FILE)")
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("PGMSG_METRICS_PORT", "0") or 0),
                        help="serve Prometheus metrics on this port (default PGMSG_METRICS_PORT; 0 for none)")
    args = parser.parse_args(argv)
    configure_logging()
    if args.metrics_port:
        metrics.serve(args.metrics_port, os.environ.get("PGMSG_METRICS_ADDRESS", "127.0.0.1"))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    dispatcher = Dispatcher(conninfo_from_env(), name=args.name, workers=args.workers,
                            per_subscription=args.per_subscription, ca_file=args.ca_file)
    log.info("dispatcher %s started", dispatcher.name)
    try:
        dispatcher.run(stop)
    finally:
        dispatcher.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
