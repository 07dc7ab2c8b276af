"""pgmsg-fan-out's loop (pgmsg.workers.fan_out.FanOutWorker) against a database of its own.

A scratch server, so that the deployed worker and pg_cron job cannot be the ones
that moved what this test published.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from pgmsg import Client
from pgmsg.errors import InvalidInput
from pgmsg.workers.fan_out import FanOutWorker
from tests.support.scratch import ScratchServer, free_port
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def scratch(scratch_server: ScratchServer) -> str:
    """The module's own migrated server: what it measures or moves is its alone."""
    return scratch_server.dsn


def test_the_worker_fans_out_what_is_published_while_it_runs_and_what_waited(scratch: str) -> None:
    with Client(scratch, max_size=2) as client:
        client.subscribe("fan-out-probe", "async", message_type="probe.*")
        waited = client.publish_many(
            [("probe.before", {"i": i}, "default") for i in range(1500)], deferred=True
        )
        worker = FanOutWorker(scratch, batch=1000, poll_seconds=0.01)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_until(lambda: worker.moved >= 1500, timeout=30, message="the backlog was not moved")
            later = client.publish("probe.after", {"late": True}, deferred=True)
            wait_until(lambda: client.deliveries(later), timeout=10, message="a new message was not moved")
        finally:
            stop.set()
            thread.join(timeout=10)
        assert not thread.is_alive()
        assert worker.moved == 1501
        assert client.deferred_status()["waiting"] == 0
        with psycopg.connect(scratch) as conn:
            moved = conn.execute(
                "SELECT count(*) FROM message_delivery WHERE message_id = ANY (%s)", ([*waited, later],)
            ).fetchone()
        assert moved == (1501,)


def test_the_worker_waits_out_a_database_that_is_away(scratch: str) -> None:
    """Refused connections are retried: the worker neither dies nor loses what waits."""
    away = psycopg.conninfo.make_conninfo(scratch, port=free_port())  # nothing listens there
    worker = FanOutWorker(away, reconnect_seconds=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        thread.join(timeout=1.5)
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive() and worker.moved == 0


@pytest.mark.parametrize(("batch", "poll"), [(0, 0.01), (100001, 0.01), (True, 0.01), (10, 0), (10, 61)])
def test_bad_settings_are_refused(batch: Any, poll: float) -> None:
    with pytest.raises(InvalidInput, match="fan-out"):
        FanOutWorker("dbname=messaging", batch=batch, poll_seconds=poll)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--batch", "many"], {}, "--batch (PGMSG_FAN_OUT_BATCH) must be a number, not 'many'"),
        (
            [],
            {"PGMSG_FAN_OUT_POLL_MS": "soon"},
            "--poll-ms (PGMSG_FAN_OUT_POLL_MS) must be a number, not 'soon'",
        ),
        (["--batch", "0"], {}, "the fan-out batch must be 1-100000 messages, not 0"),
    ],
)
def test_the_command_refuses_bad_settings_with_usage_errors(
    args: list[str], env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pgmsg.workers.fan_out", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert done.returncode == 2
    assert message in done.stderr
