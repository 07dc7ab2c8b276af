"""The dispatcher and the fan-out worker start through pgmsg.runtime, as the services do.

Each command, with the database out of reach: logs its start as a JSON line, serves its
metrics on --metrics-port while it tries to reconnect, and stops with exit code 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.support.waiting import wait_until


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _metrics(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return answer.read().decode()
    except OSError:
        return None


@pytest.mark.parametrize(
    ("module", "started", "metric"),
    [
        ("pgmsg.workers.dispatcher", "dispatcher started", "pgmsg_webhooks_pushed_total"),
        ("pgmsg.workers.fan_out", "fan-out started", "pgmsg_deferred_fanned_out_total"),
    ],
)
def test_worker_starts_serves_metrics_and_stops_on_sigterm(module: str, started: str, metric: str) -> None:
    port = _free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", module, "--metrics-port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PGMSG_DSN": "host=127.0.0.1 port=9 connect_timeout=1"},
    )
    try:
        text = wait_until(lambda: _metrics(port), timeout=30, message=f"{module} served no metrics")
        assert metric in text
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    first = json.loads(worker.stderr.read().splitlines()[0])
    assert first["msg"] == started and first["metrics_port"] == port
