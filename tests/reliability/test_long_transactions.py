"""A session idle in a transaction and a long REPEATABLE READ reader: pgmsg keeps publishing and
consuming, and both `pgmsg health` and the exporter say what is holding the database back."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgmsg import Client
from pgmsg.cli import cli
from tests.support.waiting import wait_until

#: Far longer than the health thresholds the test passes (1 and 2 seconds).
READER_SECONDS = 60


def health(dsn: str) -> tuple[int, dict[str, dict[str, str]]]:
    result = CliRunner().invoke(
        cli,
        [
            "health",
            "--json",
            "--check",
            "transactions",
            "--idle-transaction-age",
            "1",
            "--max-transaction-age",
            "2",
        ],
        env={"PGMSG_DSN": dsn},
        catch_exceptions=False,
    )
    report = json.loads(result.output)
    return result.exit_code, {c["name"]: c for c in report["checks"]}


def exporter_metrics(inventory_vars: dict[str, Any]) -> dict[str, float]:
    address = inventory_vars.get("postgres_exporter_listen_address", "127.0.0.1")
    url = f"http://{address}:{inventory_vars.get('postgres_exporter_sql_port', 9188)}/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with opener.open(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("pgmsg_transactions_"):
            name, value = line.rsplit(" ", 1)
            samples[name.split("{", 1)[0]] = float(value)
    return samples


@pytest.fixture
def stalled_sessions(dsn: str) -> Iterator[tuple[int, int]]:
    """(pid idle in a transaction, pid of a REPEATABLE READ reader busy in a long query)."""
    idle = psycopg.connect(dsn, application_name="pgmsg-test-idle-in-transaction")
    idle.execute("SELECT count(*) FROM messages")  # opens the transaction, then idles in it
    reader = psycopg.connect(dsn, application_name="pgmsg-test-long-reader")
    reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    reader.execute("SELECT count(*) FROM message_delivery")  # the snapshot is taken here
    reader_pid = reader.info.backend_pid
    done = threading.Event()

    def read_on() -> None:
        try:
            reader.execute("SELECT pg_sleep(%s)", (READER_SECONDS,))
        except (psycopg.errors.QueryCanceled, psycopg.OperationalError):
            pass  # cancelled, or terminated, by the test
        finally:
            done.set()

    thread = threading.Thread(target=read_on, daemon=True)
    thread.start()
    try:
        yield idle.info.backend_pid, reader_pid
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_cancel_backend(%s)", (reader_pid,))
        done.wait(30)
        for conn in (reader, idle):
            try:
                conn.rollback()
            except psycopg.OperationalError:
                pass  # terminated by the test
            conn.close()


def test_system_works_and_reports_long_transactions(
    dsn: str, client: Client, run_id: str, inventory_vars: dict[str, Any], stalled_sessions: tuple[int, int]
) -> None:
    idle_pid, reader_pid = stalled_sessions
    consumer = f"{run_id}-consumer"
    client.subscribe(consumer, "async", message_type=f"{run_id}.event")

    # Past both thresholds, the health check warns and names the sessions...
    def warned() -> dict[str, dict[str, str]] | None:
        code, checks = health(dsn)
        if (
            code == 1
            and checks["idle-in-transaction"]["status"] == "warning"
            and checks["oldest-transaction"]["status"] == "warning"
        ):
            return checks
        return None

    checks = wait_until(warned, timeout=30, message="pgmsg health did not warn about the sessions")
    assert str(idle_pid) in checks["idle-in-transaction"]["detail"]
    assert checks["oldest-transaction"]["detail"].split()[1] in (str(idle_pid), str(reader_pid))

    # ...the exporter reports them...
    metrics = wait_until(
        lambda: (
            (m := exporter_metrics(inventory_vars))
            and m.get("pgmsg_transactions_idle_in_transaction", 0) >= 1
            and m.get("pgmsg_transactions_oldest_seconds", 0) >= 2
            and m
        ),
        timeout=60,
        message="the exporter did not report the long transactions",
    )
    assert metrics["pgmsg_transactions_idle_in_transaction_oldest_seconds"] >= 1
    assert metrics["pgmsg_transactions_oldest_xmin_age"] >= 0

    # ...and messaging goes on underneath: publish, claim, ack, repeatedly.
    for _ in range(3):
        ids = client.publish_many([(f"{run_id}.event", {"n": n}, "default") for n in range(50)])
        claimed = []
        while len(claimed) < len(ids):
            batch = client.claim(consumer, 20)
            assert batch, "claim found nothing while deliveries are pending"
            claimed += batch
            assert client.ack([d for d in batch]) == len(batch)
        assert sorted(d.message_id for d in claimed) == sorted(ids)


def test_reports_clear_once_the_sessions_end(
    dsn: str, inventory_vars: dict[str, Any], stalled_sessions: tuple[int, int]
) -> None:
    idle_pid, reader_pid = stalled_sessions
    wait_until(lambda: health(dsn)[0] == 1, timeout=30, message="no warning while the sessions are open")
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", ([idle_pid, reader_pid],)
        )

    def cleared() -> bool:
        _code, checks = health(dsn)
        return (
            checks["idle-in-transaction"]["status"] == "ok"
            and str(idle_pid) not in checks["oldest-transaction"]["detail"]
            and str(reader_pid) not in checks["oldest-transaction"]["detail"]
        )

    wait_until(cleared, timeout=30, message="pgmsg health still warns after the sessions ended")
    wait_until(
        lambda: (
            exporter_metrics(inventory_vars).get("pgmsg_transactions_idle_in_transaction") == 0
            or _only_others_idle(dsn, idle_pid)
        ),
        timeout=60,
        message="the exporter still reports the idle session",
    )


def _only_others_idle(dsn: str, gone_pid: int) -> bool:
    """Other sessions (the deployed services) may legitimately be idle in a transaction for a
    moment; what matters is that the terminated one is not among them."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (gone_pid,)).fetchone()
    return row is not None and row[0] == 0
