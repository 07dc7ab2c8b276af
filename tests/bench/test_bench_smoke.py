"""The benchmark harness works end to end: a --smoke run of every scenario and peer.

Asserts nothing about speed (timings here are noise); it proves that each
scenario runs against the project's image, that every figure and target gets
a value, and that the report is written.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from tests.conftest import ROOT

#: Every figure the report promises (issue #6's list), by key.
EXPECTED = {
    "reference.insert.start",
    "reference.insert.end",
    "publish.1_client",
    "publish.4_clients",
    "publish.batch_1000",
    "reference.beside_fan_out.insert",
    *(
        f"publish.deferred.{kind}{whole}"
        for kind in ("1_client", "4_clients", "batch_1000")
        for whole in ("", ".fanned_out")
    ),
    *(f"consume.batch{b}.{n}" for b in (1, 10, 100) for n in ("1_consumer", "4_consumers")),
    *(
        f"latency.{kind}.{when}p{p}"
        for kind in ("e2e", "e2e_deferred", "notify_idle", "notify_load")
        for when in ("", "commit.")
        for p in (50, 99)
    ),
    "http.webhooks",
    "http.publish_p99.none",
    "http.publish_p99.slow",
    "growth.publish.10k",
    "growth.publish.1m",
    "growth.claim.10k",
    "growth.claim.1m",
    "growth.publish.rr_held",
    "growth.claim.rr_held",
    "pgqueuer.enqueue.single",
    "pgqueuer.enqueue.batch",
    "pgqueuer.worker.batch10",
    "pgqueuer.worker.batch100",
    "procrastinate.defer",
    "procrastinate.worker",
    "pgq.insert_event",
    "pgq.consume.batch",
}


def test_smoke_run_measures_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / "bench" / "run.sh"), "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert data["smoke"] is True
    figures = {f["key"]: f for f in data["figures"]}
    assert figures.keys() >= EXPECTED, sorted(EXPECTED - figures.keys())
    for key in EXPECTED:
        figure = figures[key]
        assert figure["rounds"], f"{key} was not measured: {figure['note']}"
        assert all(math.isfinite(v) for v in figure["rounds"]), (key, figure["rounds"])
        assert figure["ratio"] is not None, key
        # A latency measured from the publish call's return (".commit.") can be slightly
        # negative, a real reading: the notification arrived before the publisher saw its
        # commit acknowledged. Everything else must be positive.
        if ".commit." not in key:
            assert all(v > 0 for v in figure["rounds"]), (key, figure["rounds"])
    assert data["reference"]["rows_per_second"] > 0
    assert all(t["value"] is not None for t in data["targets"]), data["targets"]
    assert data["machine"]["postgres_version"].startswith("17")

    report = (tmp_path / "benchmarks.md").read_text()
    assert "## Targets" in report and "## Machine and settings" in report
    for key in EXPECTED:
        assert f"`{key}`" in report


def test_bench_container_is_gone_afterwards() -> None:
    names = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "pgmsg-bench-postgres" not in names
