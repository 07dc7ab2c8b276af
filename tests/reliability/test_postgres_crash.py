"""PostgreSQL killed with SIGKILL under load, then restarted by Docker.

The postmaster of the database container (``postgres_container_name``) is killed with SIGKILL
from the host (not ``docker kill``/``docker stop``: the restart policy brings it back, as after a real
crash) while the shared scenario's load runs (tests/support/outage.py): every committed
message survives with its deliveries, nothing acknowledged is handed out again, and every
party, this test's and the deployed services, carries on by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.deployment import Deployment
from tests.support.outage import Outage, container_state, healthy, run_outage_scenario
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until


def answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def ensure_postgres_back(
    dsn: str, container: str, *, old_pid: int | None = None, restart_grace: float = 30
) -> None:
    """Wait for the container to run again (started by its restart policy, or by us when
    Docker did not within ``restart_grace`` seconds), report healthy, and answer queries."""
    deadline = time.monotonic() + restart_grace
    while True:
        state = container_state(container)
        if state["Running"] and state["Pid"] not in (0, old_pid):
            break
        if time.monotonic() > deadline:
            subprocess.run(["docker", "start", container], check=True, capture_output=True, timeout=60)
            break
        time.sleep(0.2)
    wait_until(
        lambda: healthy(container) and answers(dsn),
        timeout=120,
        interval=0.5,
        message=f"{container} did not come back healthy",
    )


@pytest.fixture
def crash_guard(dsn: str, run_id: str, deployment: Deployment) -> Iterator[None]:
    """Whatever happens in the test, leave PostgreSQL running and healthy (before run_id's
    cleanup, which needs it)."""
    yield
    ensure_postgres_back(dsn, deployment.db_container, old_pid=None, restart_grace=30)


def test_sigkill_under_load_loses_nothing(
    dsn: str, run_id: str, deployment: Deployment, receiver: Receiver, crash_guard: None
) -> None:
    container = deployment.db_container
    assert healthy(container)

    def sigkill_postmaster() -> Outage:
        old_pid = container_state(container)["Pid"]
        assert old_pid > 0
        began = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)  # kill -9 of the postmaster, from the host
        ensure_postgres_back(dsn, container, old_pid=old_pid)
        return Outage(began=began, back=time.monotonic())

    run_outage_scenario(dsn, run_id, deployment, receiver, outage=sigkill_postmaster, publishers=3)
