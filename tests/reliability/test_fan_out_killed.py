"""The deployed fan-out worker killed with SIGKILL while deferred messages stream in: every
message committed by its publisher is fanned out exactly once, by the worker Docker restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import psycopg

from pgmsg import Client
from tests.support.waiting import wait_until

CONTAINER = "fan-out"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def worker_pid() -> int:
    """The host pid of the pgmsg-fan-out process: the child of the container's tini."""
    init = docker("inspect", "--format", "{{.State.Pid}}", CONTAINER).strip()
    pids = [int(p) for p in Path(f"/proc/{init}/task/{init}/children").read_text().split()]
    [pid] = [p for p in pids if "pgmsg-fan-out" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    return pid


def restarts() -> int:
    return int(docker("inspect", "--format", "{{.RestartCount}}", CONTAINER).strip())


def test_killed_fan_out_worker_loses_and_repeats_nothing(client: Client, dsn: str, run_id: str) -> None:
    for name in ("a", "b"):
        client.subscribe(f"{run_id}-{name}", "async", message_type=run_id + ".*")
    published: list[int] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def publish() -> None:
        # Every id is one whose publish returned: committed. Batches of 50 while the worker dies.
        try:
            with Client(dsn, max_size=1) as publisher:
                n = 0
                while not stop.is_set():
                    published.extend(
                        publisher.publish_many(
                            [(run_id + ".event", {"n": n + i}, "default") for i in range(50)], deferred=True
                        )
                    )
                    n += 50
        except BaseException as exc:  # reported below: a publisher failing is a finding too
            failures.append(exc)

    before = restarts()
    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(published) >= 2000, timeout=60, message="deferred publishing under way")
        os.kill(worker_pid(), signal.SIGKILL)
        wait_until(lambda: restarts() > before, timeout=60, message="Docker restarting the killed worker")
        wait_until(lambda: len(published) >= 6000, timeout=120, message="publishing going on after the kill")
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not failures, failures
    assert docker("inspect", "--format", "{{.State.Running}}", CONTAINER).strip() == "true"

    def fanned_out() -> dict[str, Any] | None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM message_inbox WHERE id = ANY (%(ids)s)) AS waiting, "
                "       (SELECT count(*) FROM messages WHERE id = ANY (%(ids)s)) AS moved, "
                "       (SELECT count(*) FROM message_delivery WHERE message_id = ANY (%(ids)s)) AS deliveries, "
                "       (SELECT count(DISTINCT (message_id, client_id)) FROM message_delivery "
                "         WHERE message_id = ANY (%(ids)s)) AS distinct_deliveries",
                {"ids": published},
            ).fetchone()
        state = dict(zip(("waiting", "moved", "deliveries", "distinct_deliveries"), row, strict=False))
        return state if state["waiting"] == 0 else None

    state = wait_until(fanned_out, timeout=60, message="the restarted worker fanning out what waited")
    assert state == {
        "waiting": 0,
        "moved": len(published),
        "deliveries": 2 * len(published),
        "distinct_deliveries": 2 * len(published),
    }
    claimed: set[int] = set()
    while batch := client.claim(f"{run_id}-a", 1000):
        claimed |= {d.message_id for d in batch}
        client.ack(d for d in batch)
    assert claimed == set(published)
