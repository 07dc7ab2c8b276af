"""The benchmark harness works end to end: a --smoke run of every scenario and peer.

Asserts nothing about speed (timings here are noise); it proves that each
scenario runs against the project's image, that every figure and target gets
a value, and that the report and its plots are written, by the run and by
--render. PGMSG_BENCH_PORT picks the bench server's port (default the bench's
own), so a run beside another bench server does not meet it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

PORT = int(os.environ.get("PGMSG_BENCH_PORT", "25440"))
CONTAINER = "pgmsg-bench-postgres" if PORT == 25440 else f"pgmsg-bench-postgres-{PORT}"
PLOTS = (
    "bench-throughput-vs-backlog.png",
    "bench-latency-under-load.png",
    "bench-subscriptions.png",
    "bench-sustained.png",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

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
    *(
        f"latency.{kind}.{when}p{p}"
        for kind in ("e2e", "e2e.loaded_1000")
        for when in ("", "commit.")
        for p in ("90", "99.9")
    ),
    *(f"latency.e2e.loaded_1000.{when}p{p}" for when in ("", "commit.") for p in (50, 99)),
    "latency.e2e.loaded_1000.rate",
    "http.webhooks",
    "http.publish_p99.none",
    "http.publish_p99.slow",
    *(f"growth.{kind}.{size}" for kind in ("publish", "claim") for size in ("10k", "100k", "1m", "10m")),
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
    "client.publish",
    "client.plain_sql",
    *(f"subscriptions.{form}.{n}" for form in ("publish", "batch") for n in ("0", "1k", "10k", "100k")),
    "sustained.e2e",
    "sustained.published",
    "sustained.deferred.batch_1000",
}
#: Levels, not rates or latencies: no ratio, and zero (or a falling backlog's negative growth) is real.
COUNTS = {"sustained.backlog_start", "sustained.backlog_end", "sustained.backlog_growth"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output directory of one --smoke run."""
    out = tmp_path_factory.mktemp("bench-smoke")
    _bench("--smoke", "--port", str(PORT), "--out", str(out))
    return out


def _bench(*args: str) -> None:
    done = subprocess.run(
        [str(ROOT / "bench" / "run.sh"), *args], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def _assert_plots(out: Path) -> None:
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name


def test_smoke_run_measures_every_figure(smoke: Path) -> None:
    data = json.loads((smoke / "benchmarks.json").read_text())
    assert data["smoke"] is True
    figures = {f["key"]: f for f in data["figures"]}
    assert figures.keys() >= EXPECTED | COUNTS, sorted((EXPECTED | COUNTS) - figures.keys())
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
    for key in COUNTS:
        assert len(figures[key]["rounds"]) == 1 and math.isfinite(figures[key]["rounds"][0]), key
        assert figures[key]["ratio"] is None, key
    for key in ("sustained.e2e", "sustained.deferred.batch_1000"):
        assert len(figures[key]["series"]) >= 2, key
    assert data["reference"]["rows_per_second"] > 0
    assert all(t["value"] is not None for t in data["targets"]), data["targets"]
    assert data["machine"]["postgres_version"].startswith("17")

    report = (smoke / "benchmarks.md").read_text()
    assert "## Targets" in report and "## Machine and settings" in report
    assert "| pgmsg | PgQueuer | procrastinate | PGQ |" in report
    for key in EXPECTED:
        assert f"`{key}`" in report
    assert "not measured" not in report and "not drawn" not in report
    for name in PLOTS:
        assert f"]({name})" in report
    _assert_plots(smoke)


def test_render_redraws_report_and_plots(smoke: Path) -> None:
    for name in (*PLOTS, "benchmarks.md"):
        (smoke / name).unlink()
    _bench("--render", "--out", str(smoke))
    _assert_plots(smoke)
    report = (smoke / "benchmarks.md").read_text()
    for name in PLOTS:
        assert f"]({name})" in report


def test_render_without_a_group_says_what_is_missing(smoke: Path, tmp_path: Path) -> None:
    data = json.loads((smoke / "benchmarks.json").read_text())
    data["figures"] = [f for f in data["figures"] if not f["key"].startswith(("sustained.", "growth."))]
    (tmp_path / "benchmarks.json").write_text(json.dumps(data))
    _bench("--render", "--out", str(tmp_path))
    report = (tmp_path / "benchmarks.md").read_text()
    assert "bench-sustained.png`)." in report and "bench-throughput-vs-backlog.png`)." in report
    assert not (tmp_path / "bench-sustained.png").exists()
    assert (tmp_path / "bench-subscriptions.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "| sustained end to end" in report and "| not measured |" in report


def test_bench_container_is_gone_afterwards() -> None:
    names = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert CONTAINER not in names
