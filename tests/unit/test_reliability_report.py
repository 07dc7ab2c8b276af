"""docs/reliability.md cannot promise what no test checks: every test a scenario names exists,
and the report turns a JUnit run into the right verdicts."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.reliability.promises import PROMISES
from tests.reliability.scenarios import SCENARIOS

spec = importlib.util.spec_from_file_location(
    "reliability_report", ROOT / "scripts" / "reliability-report.py"
)
assert spec and spec.loader
report = importlib.util.module_from_spec(spec)
sys.modules["reliability_report"] = report  # dataclasses look their module up there
spec.loader.exec_module(report)


@pytest.mark.parametrize("reference", sorted({t for s in SCENARIOS for t in s.tests}))
def test_every_named_test_exists(reference: str) -> None:
    path, _, function = reference.partition("::")
    source = ROOT / path
    assert source.is_file(), f"{path} does not exist"
    if function:
        assert re.search(rf"^(async )?def {re.escape(function)}\(", source.read_text(), re.M), reference
    else:
        assert re.search(r"^(async )?def test_", source.read_text(), re.M), f"{path} has no test"


def test_scenarios_have_distinct_titles_and_tests() -> None:
    assert len({s.title for s in SCENARIOS}) == len(SCENARIOS)
    assert all(s.tests and s.checks.strip() for s in SCENARIOS)


def test_report_verdicts(tmp_path: Path) -> None:
    first, second = SCENARIOS[0], SCENARIOS[1]
    module = first.tests[0].split("::")[0].removesuffix(".py").replace("/", ".")
    name = first.tests[0].split("::")[1]
    other = second.tests[0].split("::")[0].removesuffix(".py").replace("/", ".")
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<?xml version="1.0"?><testsuites><testsuite>'
        f'<testcase classname="{module}" name="{name}" time="3.5"/>'
        f'<testcase classname="{other}" name="{second.tests[0].split("::")[1]}" time="1">'
        '<failure message="boom"/></testcase>'
        "</testsuite></testsuites>"
    )
    results = report.outcomes(junit)
    assert results[0].nodeid == first.tests[0] and results[0].status == "passed"
    assert results[1].status == "failed"
    text = report.render(results, report.datetime.now(report.UTC), "abc1234")
    assert "passed (1 test, 4 s)" in text
    assert "**1 of 1 not passed** (failed)" in text
    assert "**not run**" in text  # every other scenario
    assert re.search(
        rf"\*\*1 of {len(SCENARIOS)} scenarios passed; \d+ of {len(PROMISES)} README promises held\.\*\*",
        text,
    )
