"""The HTTP push dispatcher: delivers webhooks after the publisher has committed.

Why a service woken by LISTEN rather than a pg_cron job: pg_cron runs at most
once a second and serially inside the database, so every webhook would wait up
to a second and one slow endpoint would hold up the job. The dispatcher wakes
on NOTIFY pgmsg_http within milliseconds of the commit, pushes concurrently
(on one asyncio event loop, see pgmsg.webhook_http), and caps the requests in
flight per subscription (its own max_in_flight, else per_subscription), so a
slow or dead endpoint occupies at most that many request slots while the others
go on. Retries, backoff, dead letters and 410
handling are decided in SQL (pgmsg_record_http_attempt), the same rules for
every dispatcher. Claims are leases: a dispatcher that dies mid-request loses
nothing, its deliveries are claimable again when the lease lapses. A push is
recorded only under the lease token its claim returned, so a dispatcher whose
lease passed on cannot change what the current holder records, and a request
is not started when too little of the lease is left for it (the delivery is
given back instead). Ordered subscriptions get one delivery per key at a time
from the claim itself.

This module schedules: the claim loop, its wake-ups, the per-subscription caps
and the release of orphaned claims. A push is pgmsg.workers.pushing, recording
it pgmsg.workers.recording, and every statement pgmsg.client.dispatch_store.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from typing import Any

from pgmsg import runtime
from pgmsg.client import Listener
from pgmsg.client.dispatch_store import DispatchStore
from pgmsg.errors import InvalidInput
from pgmsg.ssrf import Allowlist
from pgmsg.workers.pushing import Pushed, Pusher
from pgmsg.workers.recording import Finished, Recorder

log = logging.getLogger("pgmsg.dispatcher")

# The defaults, chosen from measurements of the deployed dispatcher (docs/operations.md,
# "Dispatcher settings"); the deployment passes its own through the environment.
#: Requests in flight in all: eight endpoints at their per-subscription limit before others wait.
DEFAULT_WORKERS = 128
#: Requests in flight per subscription without a max_in_flight of its own.
DEFAULT_PER_SUBSCRIPTION = 16
#: Most deliveries claimed per claim transaction (200 measured no faster).
DEFAULT_BATCH = 100


class Dispatcher:
    """Pushes due HTTP deliveries; run() until stopped, or dispatch_once() for one round."""

    def __init__(
        self,
        conninfo: str,
        *,
        name: str | None = None,
        workers: int = DEFAULT_WORKERS,
        per_subscription: int = DEFAULT_PER_SUBSCRIPTION,
        batch: int = DEFAULT_BATCH,
        lease_seconds: int = 120,
        idle_poll_seconds: float = 1.0,
        resolve: Callable[[str, int], list[str]] | None = None,
        ca_file: str | None = None,
    ) -> None:
        # A zero leaves no request slot (nothing is ever pushed, silently); a lease of
        # 0 lapses at once, so another dispatcher would send the same webhook-id too.
        for setting, value, low, high in (
            ("workers", workers, 1, 10_000),
            ("per_subscription", per_subscription, 1, 10_000),
            ("batch", batch, 1, 100_000),
            ("lease_seconds", lease_seconds, 1, 43_200),
            ("idle_poll_seconds", idle_poll_seconds, 0.001, 3_600),
        ):
            if not low <= value <= high:  # NaN fails every comparison
                raise InvalidInput(
                    f"dispatcher setting {setting}={value!r} is out of range: give {low} to {high}"
                    + (
                        " (well above the longest http_timeout_ms, at most 60 s)"
                        if setting == "lease_seconds"
                        else ""
                    )
                )
        self.store = DispatchStore(conninfo)
        self.conninfo = self.store.conninfo
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.per_subscription = per_subscription
        #: Deliveries claimed per subscription beyond its request slots (at most as many
        #: again as it has slots): they wait in the dispatcher, so a finished request is
        #: followed at once by the next instead of by a claim's round trip (which, under
        #: load, took longer than a request).
        self.claim_ahead = per_subscription
        # Per subscription, its limit and request slots (used on the event loop only).
        self._slots: dict[int, tuple[int, asyncio.Semaphore]] = {}
        # Per subscription with claims held, its limit as the last claim returned it (the
        # subscription's max_in_flight, else per_subscription).
        self._limits: dict[int, int] = {}
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.idle_poll_seconds = idle_poll_seconds
        # Every request runs on one event loop, in a thread of its own; at most
        # ``workers`` at a time (the others wait for a slot, claimed).
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="pgmsg-push", daemon=True)
        self._loop_thread.start()
        self._requests = asyncio.Semaphore(workers)
        self._pushes: set[Future[None]] = set()
        # Per subscription, requests claimed and not yet finished: what the cap counts.
        self._inflight: Counter[int] = Counter()
        self._inflight_ids: set[int] = set()  # deliveries claimed, not yet recorded
        self._lock = threading.Lock()
        # Set whenever a push finishes: a request slot is free again.
        self._slot_freed = threading.Event()
        self.pusher = Pusher(self._loop, ca_file=ca_file, resolve=resolve)
        self.recorder = Recorder(self.store, self._released)
        #: With requests in flight, how often new work is looked for (see _wait_for_work).
        self.busy_poll_seconds = 0.05
        #: After a request finishes while others are still in flight, how long to let more
        #: finish before claiming their slots again (see _wait_for_work).
        self.gather_seconds = 0.005
        self._allowlist: Allowlist | None = None
        self._allowlist_read = 0.0

    # The recorder's counts, read by the heartbeat, the tests and the bench.
    pushed = property(lambda self: self.recorder.pushed)
    lost_leases = property(lambda self: self.recorder.lost_leases)
    given_back = property(lambda self: self.recorder.given_back)

    def record(self, batch: list[Finished]) -> None:
        """Record finished pushes now, on this thread (see Recorder.record)."""
        self.recorder.record(batch)

    def allowlist(self) -> Allowlist:
        """The webhook allowlist from the database, re-read every 30 seconds."""
        if self._allowlist is None or time.monotonic() - self._allowlist_read > 30:
            # An entry the database holds but the parser refuses (written into the table by
            # hand, or by an older release) is left out with a logged error: refusing the
            # whole list would give every claim back and claim again for ever.
            blocked = self.store.blocked_networks()
            entries: list[str] = []
            for entry in self.store.allowlist_entries():
                try:
                    Allowlist.parse([entry], blocked)
                except InvalidInput as exc:
                    log.error("ignoring webhook allowlist entry %r: %s", entry, exc)
                else:
                    entries.append(entry)
            self._allowlist = Allowlist.parse(entries, blocked)
            self._allowlist_read = time.monotonic()
        return self._allowlist

    def heartbeat(self) -> None:
        self.store.heartbeat(self.name, self.pushed)

    # -- claiming ---------------------------------------------------------------

    def dispatch_once(self) -> int:
        """Claim due deliveries and hand them to the workers; returns how many were claimed.

        A subscription's limit is its max_in_flight, else per_subscription: it
        gets at most that many deliveries requested at a time, and up to
        claim_ahead more (at most the limit again) claimed by this dispatcher,
        waiting for a slot.
        """
        with self._lock:
            busy = {sub: n for sub, n in self._inflight.items() if n > 0}
        rows = self.store.claim(
            self.name, self.batch, self.per_subscription, self.claim_ahead, self.lease_seconds, busy
        )
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
                self._limits[row["subscription_id"]] = self._limit(row)
            pushing = asyncio.run_coroutine_threadsafe(
                self._push_and_record(row, record_until, allowlist), self._loop
            )
            with self._lock:
                self._pushes.add(pushing)
            pushing.add_done_callback(self._pushes_done)
        return len(rows)

    def _pushes_done(self, pushing: Future[None]) -> None:
        with self._lock:
            self._pushes.discard(pushing)

    def _released(self, delivery_ids: Iterable[int]) -> None:
        """The recorder is done with these deliveries: no longer held by this dispatcher."""
        with self._lock:
            self._inflight_ids.difference_update(delivery_ids)

    async def _push_and_record(self, row: dict[str, Any], record_until: float, allowlist: Allowlist) -> None:
        finished = None
        unsent = False
        subscription = row["subscription_id"]
        limit = self._limit(row)
        found = self._slots.get(subscription)
        if found is None or found[0] != limit:
            # A changed max_in_flight applies to the requests started from now on; those
            # under way finish on the slots they hold.
            found = self._slots[subscription] = (limit, asyncio.Semaphore(limit))
        slots = found[1]
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
                    finished = Finished(row, *await self.pusher.push(row, allowlist), record_until)
        except Exception:  # the loop must go on; the lease returns the delivery
            log.exception("pushing delivery %s failed unexpectedly", row["delivery_id"])
        finally:
            with self._lock:
                self._inflight[subscription] -= 1
                if self._inflight[subscription] <= 0:
                    del self._inflight[subscription]
                    self._limits.pop(subscription, None)
                    self._slots.pop(subscription, None)  # nothing of it left waiting
                if not unsent and finished is None:
                    self._inflight_ids.discard(row["delivery_id"])
            if unsent:
                self.recorder.add_unsent(row)
            elif finished is not None:
                self.recorder.add(finished)
            self._slot_freed.set()

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
        released = self.store.release_orphans(self.name, inflight)
        if released:
            log.warning(
                "released %d deliveries claimed by %s before its connection was lost",
                len(released),
                self.name,
            )
        return len(released)

    def inflight(self) -> int:
        """Requests claimed and not finished yet (being made, or waiting for a worker)."""
        with self._lock:
            return sum(self._inflight.values())

    def push(self, row: dict[str, Any]) -> Pushed:
        """POST one claimed delivery now (not recorded); see Pusher.push."""
        allowlist = self.allowlist()
        return asyncio.run_coroutine_threadsafe(self.pusher.push(row, allowlist), self._loop).result()

    # -- the loop ---------------------------------------------------------------

    def run(self, stop: threading.Event, *, ready: threading.Event | None = None) -> None:
        """Dispatch until ``stop`` is set, sleeping on LISTEN pgmsg_http when idle."""
        last_beat = [0.0]

        def session() -> None:
            with Listener(self.conninfo, ["pgmsg_http"]) as wake:
                self.release_orphaned_claims()
                if ready is not None:
                    ready.set()
                while not stop.is_set():
                    if time.monotonic() - last_beat[0] > 5:
                        self.heartbeat()
                        last_beat[0] = time.monotonic()
                    self._slot_freed.clear()
                    if self.dispatch_once() >= self.batch:
                        continue  # the claim was full: more may be due already
                    self._wait_for_work(wake, stop)

        # Database restarts are expected: reconnect after a pause.
        runtime.reconnecting(
            stop,
            session,
            log=log,
            message="dispatcher lost the database; reconnecting",
            pause=1.0,
            on_lost=self.store.forget_connection,
        )

    def _wait_for_work(self, wake: Listener, stop: threading.Event) -> None:
        """Wait until claiming again may find something: everything claimable was just claimed.

        Idle, that is when work is announced (NOTIFY pgmsg_http) or, for retries
        falling due and lapsed leases, after idle_poll_seconds. With requests in
        flight, also when one finishes (its slot is free again; gather_seconds
        later while others are still in flight, so that one claim fills several
        slots). A publish to a subscription with requests in flight announces
        nothing (migration 011): while an endpoint is slow and at its cap, a
        wake-up per publish would only take CPU from the publishers. So while
        some subscription with requests in flight still has free slots, new work
        for it is looked for every busy_poll_seconds; while all are at their
        cap, nothing is claimed until a slot frees or another subscription
        announces work.
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

    def _limit(self, row: dict[str, Any]) -> int:
        """The in-flight limit of a claimed row's subscription, as the claim returned it."""
        return int(row.get("max_in_flight") or self.per_subscription)

    def _all_at_cap(self) -> bool:
        """Whether every subscription with requests in flight has all it may have claimed."""
        with self._lock:
            return all(
                n >= (limit := self._limits.get(sub, self.per_subscription)) + min(self.claim_ahead, limit)
                for sub, n in self._inflight.items()
            )

    def close(self) -> None:
        """Finish the pushes already claimed, record them, and release the connections."""
        while True:
            with self._lock:
                pushes = list(self._pushes)
            if not pushes:
                break
            wait(pushes)  # their failures are logged by _push_and_record
        self.recorder.close()
        self._loop.call_soon_threadsafe(self.pusher.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=10)
        if not self._loop_thread.is_alive():
            self._loop.close()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    """pgmsg-dispatcher: push webhooks until SIGTERM/SIGINT. Connection from PGMSG_DSN or PG*."""
    parser = runtime.parser("pgmsg-dispatcher", main.__doc__)
    parser.add_argument(
        "--workers",
        type=_positive,
        help=f"concurrent requests in all (default PGMSG_DISPATCHER_WORKERS, else {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--per-subscription",
        type=_positive,
        help="concurrent requests per subscription without a max_in_flight of its own, so one slow "
        "endpoint cannot take every worker (default PGMSG_DISPATCHER_PER_SUBSCRIPTION, else "
        f"{DEFAULT_PER_SUBSCRIPTION})",
    )
    parser.add_argument(
        "--batch",
        type=_positive,
        help=f"most deliveries per claim (default PGMSG_DISPATCHER_BATCH, else {DEFAULT_BATCH})",
    )
    parser.add_argument(
        "--name",
        default=os.environ.get("PGMSG_DISPATCHER_NAME") or None,
        help="name in pgmsg_dispatchers (default PGMSG_DISPATCHER_NAME, else host:pid)",
    )
    parser.add_argument(
        "--ca-file",
        default=os.environ.get("PGMSG_WEBHOOK_CA_FILE") or None,
        help="PEM file of CAs trusted for https endpoints besides the system's "
        "(default PGMSG_WEBHOOK_CA_FILE)",
    )
    args = parser.parse_args(argv)
    try:
        sizes = {
            name: int(runtime.setting(_text(getattr(args, name)), option, env, str(default), int))
            for name, option, env, default in (
                ("workers", "--workers", "PGMSG_DISPATCHER_WORKERS", DEFAULT_WORKERS),
                (
                    "per_subscription",
                    "--per-subscription",
                    "PGMSG_DISPATCHER_PER_SUBSCRIPTION",
                    DEFAULT_PER_SUBSCRIPTION,
                ),
                ("batch", "--batch", "PGMSG_DISPATCHER_BATCH", DEFAULT_BATCH),
            )
        }
        config = runtime.settings(
            needs_client=False, metrics_port=args.metrics_port, metrics_flag="--metrics-port"
        )
        dispatcher = Dispatcher(config.conninfo, name=args.name, ca_file=args.ca_file, **sizes)
    except InvalidInput as exc:
        parser.error(str(exc))
    stop = runtime.start("dispatcher", config, name=dispatcher.name, **sizes)
    try:
        dispatcher.run(stop)
    finally:
        dispatcher.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
