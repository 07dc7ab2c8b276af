"""The cost tools behind bench/analysis.md's "Issue 19" tables run and measure what they say.

``bench.publish_costs`` and ``bench.sustained_costs`` each start their own throwaway bench server
(the project's image), measure, and print a table. Nothing here asserts a speed (timings are
noise); what is asserted is that every row gets a figure, and that the HOT experiment is one:
on the copy with keys only nearly every update is HOT, on message_delivery as deployed none is,
as the analysis says.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from bench.publish_costs import VARIANTS
from tests.conftest import ROOT

#: Beside the bench smoke test's server (PGMSG_BENCH_PORT), never on it.
PORT = int(os.environ.get("PGMSG_BENCH_PORT", "25440")) + 9
ROW = re.compile(r"^\| (?P<label>.+?) \| +(?P<value>[0-9.]+) \|$", re.M)


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def _rows(output: str) -> dict[str, float]:
    return {m["label"]: float(m["value"]) for m in ROW.finditer(output)}


def test_sustained_costs_measures_every_row_and_hot_updates() -> None:
    done = _tool("bench.sustained_costs", "--messages", "300", "--rounds", "1", "--port", str(PORT))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = _rows(done.stdout)
    assert len(rows) == 10, done.stdout
    assert all(value > 0 for value in rows.values()), rows
    [deployed] = [label for label in rows if "as deployed (" in label]
    [copy] = [label for label in rows if "keys only" in label and "HOT)" in label]
    deployed_hot = int(re.search(r"\((\d+)% HOT\)", deployed)[1])
    copy_hot = int(re.search(r"\((\d+)% HOT\)", copy)[1])
    assert deployed_hot <= 5, deployed  # status is in the partial indexes' predicates
    assert copy_hot >= 90, copy  # the ceiling the analysis quotes is made of HOT updates
    assert done.stdout.count("upper bound") == 2 and "x reference" in done.stdout, done.stdout


def test_publish_costs_measures_every_variant_in_the_server_and_from_the_client() -> None:
    done = _tool("bench.publish_costs", "--rounds", "1", "--client", "100", "--port", str(PORT))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    in_server, _, from_client = done.stdout.partition("From the client")
    table = re.findall(r"^\| (.+?) +\| +([0-9.]+) \| +([0-9.]+) \|$", in_server, re.M)
    assert [label for label, _, _ in table] == list(VARIANTS), done.stdout
    assert all(float(single) > 0 and float(batch) > 0 for _, single, batch in table), table
    # From the client: committed, not awaiting the flush, each as a ratio to the raw INSERT's.
    number = r" +([0-9.]+) \|"
    client = re.findall(rf"^\| (.+?) +\|{number * 4} +(-?[0-9.]+) \|$", from_client, re.M)
    assert [row[0] for row in client] == list(VARIANTS), done.stdout
    raw = client[0]
    assert raw[2] == raw[4] == "1.00", raw  # the raw INSERT is its own reference
    for label, flushed, ratio, unflushed, unflushed_ratio, flush in client:
        assert float(flushed) > 0 and float(unflushed) > 0, label
        assert abs(float(flushed) - float(unflushed) - float(flush)) < 0.2, label
        assert abs(float(raw[1]) / float(flushed) - float(ratio)) < 0.01, label
        assert abs(float(raw[3]) / float(unflushed) - float(unflushed_ratio)) < 0.01, label


def test_cost_tools_refuse_bad_arguments_before_starting_anything() -> None:
    for args in (
        ("bench.sustained_costs", "--messages", "10"),
        ("bench.publish_costs", "--rounds", "0"),
        ("bench.publish_costs", "--client", "50"),
    ):
        done = _tool(*args)
        assert done.returncode == 2, done
        assert "must be" in done.stderr, done.stderr
