"""The database goes away under load, and everybody carries on: the shared scenario.

Publishers, async consumers (Client.run_consumer), a NOTIFY listener and the HTTP dispatcher
run while an *outage* (a callable the test passes: a SIGKILL of the postmaster, a
``docker kill`` of the Patroni leader, a switchover) takes the database away and brings it,
or a new leader, back. Afterwards every committed message is there with its deliveries,
nothing acknowledged before the outage is handed out again, every delivery is completed, and
every party, the test's and the deployed services, carries on by itself.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.rows import dict_row

from pgmsg import Acked, Client, Delivery, PgmsgError
from pgmsg.client import DeliveryRef
from pgmsg.workers.dispatcher import Dispatcher
from tests.support.deployment import Deployment
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CATALOG = yaml.safe_load((ROOT / "roles/pgmsg_services/defaults/main.yml").read_text())[
    "pgmsg_services_catalog"
]
CONSUMERS = 2
LEASE_SECONDS = 5  # what a consumer claimed but had not acked at the crash comes back after this
# After the restart every delivery completes within this. Nothing may wait for a dispatcher's
# lease (120 s for the deployed one): a dispatcher records the outcome of a push that was in
# flight once the database is back, and gives back claims whose answer the crash swallowed.
COMPLETION_TIMEOUT = 60


# -- the container ---------------------------------------------------------------------------


def container_exists(name: str) -> bool:
    return subprocess.run(["docker", "inspect", name], capture_output=True, timeout=30).returncode == 0


def container_state(name: str) -> dict[str, Any]:
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{json .State}}", name],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return json.loads(out)


def healthy(name: str) -> bool:
    state = container_state(name)
    return bool(state["Running"] and state.get("Health", {}).get("Status") == "healthy")


# -- the parties -----------------------------------------------------------------------------


@dataclass
class Journal:
    """What the parties did, with time.monotonic() stamps; appended to from many threads."""

    committed: list[tuple[int, int, float]] = field(default_factory=list)  # (publisher, message id, t)
    publish_errors: list[tuple[int, str, float]] = field(default_factory=list)
    handled: list[tuple[int, int, float]] = field(default_factory=list)  # (delivery id, attempts, t)
    acked: list[tuple[int, float]] = field(default_factory=list)  # (delivery id, t ack returned)
    notified: list[tuple[int, float]] = field(default_factory=list)  # (message id, t)
    crashed: list[str] = field(default_factory=list)  # threads that died


class RecordingClient(Client):
    """A Client that notes every delivery whose ack returned, i.e. committed."""

    journal: Journal

    def ack(self, deliveries: Iterable[DeliveryRef]) -> Acked:
        claimed = list(deliveries)
        done = super().ack(claimed)
        now = time.monotonic()
        lost = set(done.not_acked)
        self.journal.acked.extend(
            (i, now) for i in (d.id if isinstance(d, Delivery) else d[0] for d in claimed) if i not in lost
        )
        return done


def guarded(journal: Journal, name: str, target: Any, *args: Any, **kwargs: Any) -> threading.Thread:
    def run() -> None:
        try:
            target(*args, **kwargs)
        except BaseException as exc:
            journal.crashed.append(f"{name}: {type(exc).__name__}: {exc}")
            raise

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def publish_loop(
    client: Client, journal: Journal, number: int, message_type: str, stop: threading.Event
) -> None:
    n = 0
    while not stop.is_set():
        try:
            message_id = client.publish(message_type, {"publisher": number, "n": n})
        except PgmsgError as exc:  # the outage: note it and keep going
            journal.publish_errors.append((number, str(exc)[:200], time.monotonic()))
            stop.wait(0.2)
            continue
        journal.committed.append((number, message_id, time.monotonic()))
        n += 1
        stop.wait(0.03)


# -- the deployed services ------------------------------------------------------------------


def health_url(service: str, deployment: Deployment) -> str:
    spec = CATALOG[service]
    if spec.get("health_path"):
        return f"http://127.0.0.1:{deployment.render(str(spec['health_port']))}{spec['health_path']}"
    return f"http://127.0.0.1:{spec['metrics_port']}/metrics"


def endpoint_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def service_roles(inventory_vars: dict[str, Any], services: list[str]) -> set[str]:
    """The login roles the enabled services connect with."""
    by_client = {c["client_id"]: c["name"] for c in inventory_vars.get("messaging_schema_clients", [])}
    # A client service runs as the client login role of its name (roles/pgmsg_services).
    roles = {by_client[s] for s in services if CATALOG[s]["login_as"] == "client" and s in by_client}
    if "http-dispatcher" in services:
        roles.add(inventory_vars["messaging_schema_dispatchers"][0]["name"])
    return roles


# -- the scenario -----------------------------------------------------------------------------


@dataclass
class Outage:
    """When the outage began and when the database answered again (time.monotonic())."""

    began: float
    back: float


def run_outage_scenario(
    dsn: str,
    run_id: str,
    deployment: Deployment,
    receiver: Receiver,
    *,
    outage: Callable[[], Outage],
    publishers: int = 3,
) -> Journal:
    """Put the system under load, call ``outage`` (which must return once the database
    answers again), then check that nothing was lost or handed out twice and that everybody
    carried on by themselves; ``receiver`` (the fixture) is the webhook endpoint. Returns the
    journal for the caller's own checks."""
    n_publishers = publishers
    services = deployment.services
    # The services must carry on in the process they run in now: no restart by Docker either.
    watched = services + [
        c for c in (deployment.exporter_container, deployment.pgadmin_container) if container_exists(c)
    ]
    started = {s: container_state(s)["StartedAt"] for s in watched}
    journal = Journal()
    stop_publishing, stop_consuming = threading.Event(), threading.Event()
    admin = Client(dsn, max_size=2)
    publisher_client = Client(dsn, max_size=n_publishers + 1)
    consumer_client = RecordingClient(dsn, max_size=CONSUMERS + 1)
    consumer_client.journal = journal
    dispatcher_name = run_id + "-dispatcher"
    dispatcher = Dispatcher(
        dsn, name=dispatcher_name, workers=8, per_subscription=4, idle_poll_seconds=0.2, lease_seconds=20
    )
    threads: dict[str, threading.Thread] = {}
    message_type = run_id + ".evt"
    try:
        work = admin.subscribe(
            run_id + "-work", "async", message_type=run_id + ".*", lease_seconds=LEASE_SECONDS
        )
        hook = admin.subscribe(
            run_id + "-hook",
            "http",
            message_type=run_id + ".*",
            webhook_url=receiver.url,
            retry_base_ms=100,
            retry_max_ms=1000,
            max_attempts=100,
        )
        dash = admin.subscribe(run_id + "-dash", "notify", message_type=run_id + ".*")
        subscription_ids = [work.id, hook.id, dash.id]
        done_status = {"async": "delivered", "http": "delivered", "notify": "notified"}

        listener = admin.listener(dash.notify_channel or dash.client_id)
        listener_ready = threading.Event()

        def listen() -> None:
            with listener:
                listener_ready.set()
                while not stop_consuming.is_set():
                    for note in listener.notifications(timeout=0.5):
                        journal.notified.append((note.payload["id"], time.monotonic()))

        def handle(delivery: Delivery) -> None:
            journal.handled.append((delivery.id, delivery.attempts, time.monotonic()))

        dispatcher_ready = threading.Event()
        threads["listener"] = guarded(journal, "listener", listen)
        threads["dispatcher"] = guarded(
            journal, "dispatcher", dispatcher.run, stop_consuming, ready=dispatcher_ready
        )
        for i in range(CONSUMERS):
            threads[f"consumer-{i}"] = guarded(
                journal,
                f"consumer-{i}",
                consumer_client.run_consumer,
                work.client_id,
                handle,
                stop=stop_consuming,
                batch_size=20,
                consumer=f"{run_id}-c{i}",
                idle_poll_seconds=0.5,
            )
        assert listener_ready.wait(15) and dispatcher_ready.wait(15)
        for i in range(n_publishers):
            threads[f"publisher-{i}"] = guarded(
                journal,
                f"publisher-{i}",
                publish_loop,
                publisher_client,
                journal,
                i,
                message_type,
                stop_publishing,
            )

        # Load runs: every party has done some work.
        wait_until(
            lambda: (
                len(journal.committed) >= 150
                and len(journal.acked) >= 50
                and len(journal.notified) >= 50
                and len(receiver.requests) >= 50
            ),
            timeout=60,
            message="the load did not get going",
        )

        # What was complete before the crash (committed: read back before the kill).
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
            complete_before = {
                r["id"]: r
                for r in conn.execute(
                    "SELECT id, delivery_mode, status, attempts FROM message_delivery "
                    "WHERE subscription_id = ANY(%s) AND status IN ('delivered', 'notified')",
                    (subscription_ids,),
                ).fetchall()
            }
        assert complete_before

        # -- the outage ------------------------------------------------------------------------
        times = outage()
        killed_at, back_at = times.began, times.back
        acked_before = {i: t for i, t in journal.acked if t < killed_at}
        attempts_when_handled = {i: a for i, a, t in journal.handled if t < killed_at}
        with psycopg.connect(dsn, autocommit=True) as conn:
            back_db_time = conn.execute("SELECT now()").fetchone()[0]

        # -- everybody carries on by themselves -------------------------------------------------
        wait_until(
            lambda: all(
                sum(1 for p, _, t in journal.committed if p == i and t > back_at) >= 20
                for i in range(n_publishers)
            ),
            timeout=60,
            message="publishers did not carry on after the restart",
        )
        wait_until(
            lambda: sum(1 for _, t in journal.acked if t > back_at) >= 20,
            timeout=60,
            message="consumers did not carry on after the restart",
        )
        wait_until(lambda: listener.reconnects >= 1, timeout=30, message="the listener did not reconnect")
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_until(
                lambda: conn.execute(
                    "SELECT 1 FROM pgmsg_dispatchers WHERE name = %s AND last_seen > %s",
                    (dispatcher_name, back_db_time),
                ).fetchone(),
                timeout=30,
                message="the dispatcher did not report in after the restart",
            )
        stop_publishing.set()
        for i in range(n_publishers):
            threads[f"publisher-{i}"].join(timeout=30)
        # Probes published now that the listener listens again: it must get every one.
        probes = [publisher_client.publish(message_type, {"probe": i}) for i in range(10)]
        wait_until(
            lambda: set(probes) <= {m for m, _ in journal.notified},
            timeout=30,
            message="the listener missed notifications after reconnecting",
        )

        # Every delivery completes: async acked, http delivered, notify notified.
        def incomplete() -> list[dict[str, Any]]:
            with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
                return conn.execute(
                    "SELECT id, delivery_mode, status, attempts, claimed_by, lease_expires_at "
                    "FROM message_delivery WHERE subscription_id = ANY(%s) "
                    "AND status <> CASE delivery_mode WHEN 'notify' THEN 'notified' ELSE 'delivered' END",
                    (subscription_ids,),
                ).fetchall()

        try:
            wait_until(
                lambda: not incomplete(),
                timeout=COMPLETION_TIMEOUT,
                interval=0.5,
                message="deliveries still incomplete",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {incomplete()[:10]}") from None
        assert not journal.crashed, journal.crashed
        assert all(t.is_alive() for name, t in threads.items() if not name.startswith("publisher"))

        # -- nothing lost, nothing handed out twice ----------------------------------------------
        committed = {m for _, m, _ in journal.committed} | set(probes)
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
            present = {
                r["id"]
                for r in conn.execute(
                    "SELECT id FROM messages WHERE id = ANY(%s)", (list(committed),)
                ).fetchall()
            }
            deliveries = conn.execute(
                "SELECT id, message_id, subscription_id, delivery_mode, status, attempts FROM message_delivery "
                "WHERE subscription_id = ANY(%s)",
                (subscription_ids,),
            ).fetchall()
        assert committed - present == set(), "committed messages lost in the crash"
        per_message: dict[int, list[int]] = {}
        for d in deliveries:
            per_message.setdefault(d["message_id"], []).append(d["subscription_id"])
        for message_id in committed:
            assert sorted(per_message.get(message_id, [])) == sorted(subscription_ids), message_id
        assert all(d["status"] == done_status[d["delivery_mode"]] for d in deliveries)
        by_id = {d["id"]: d for d in deliveries}

        # Acknowledged before the crash: never claimed again (no handler saw it afterwards, and the
        # database counted no further attempt).
        assert acked_before
        handled_after = {i for i, _, t in journal.handled if t > killed_at}
        assert handled_after, "no delivery was consumed after the crash"
        assert not handled_after & set(acked_before), "acknowledged deliveries were handed out again"
        for delivery_id in acked_before:
            assert by_id[delivery_id]["status"] == "delivered"
            assert by_id[delivery_id]["attempts"] == attempts_when_handled[delivery_id], delivery_id
        # Complete before the crash (all modes, http included): still complete, no attempt since.
        for delivery_id, before in complete_before.items():
            after = by_id[delivery_id]
            assert (after["status"], after["attempts"]) == (before["status"], before["attempts"]), delivery_id

        # Every http delivery reached the receiver (a push whose outcome was lost in the crash
        # may arrive twice: same webhook-id, for the receiver to deduplicate).
        pushed = {int(r.headers["pgmsg-delivery-id"]) for r in receiver.requests}
        assert {d["id"] for d in deliveries if d["delivery_mode"] == "http"} <= pushed

        # -- the deployed services are back -----------------------------------------------------
        def unhealthy() -> list[str]:
            return [s for s in services if not (healthy(s) and endpoint_ok(health_url(s, deployment)))]

        wait_until(
            lambda: not unhealthy(),
            timeout=60,
            interval=0.5,
            message="the services are not all healthy after the restart",
        )
        assert {s: container_state(s)["StartedAt"] for s in watched} == started, "a container was restarted"
        expected_roles = service_roles(deployment.inventory_vars, services)
        with psycopg.connect(dsn, autocommit=True) as conn:

            def connected() -> set[str]:
                return {
                    r[0]
                    for r in conn.execute(
                        "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()"
                    ).fetchall()
                }

            wait_until(
                lambda: expected_roles <= connected(),
                timeout=60,
                message=f"services did not reconnect: {sorted(expected_roles)}",
            )
            if "http-dispatcher" in services:
                wait_until(
                    lambda: conn.execute(
                        "SELECT 1 FROM pgmsg_dispatchers WHERE name LIKE %s AND last_seen > %s",
                        ("%http-dispatcher", back_db_time),
                    ).fetchone(),
                    timeout=60,
                    message="the deployed http-dispatcher did not report in",
                )
        return journal
    finally:
        stop_publishing.set()
        stop_consuming.set()
        for thread in threads.values():
            thread.join(timeout=30)
        dispatcher.close()
        for c in (publisher_client, consumer_client, admin):
            c.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM pgmsg_dispatchers WHERE name = %s", (dispatcher_name,))
