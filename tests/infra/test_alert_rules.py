"""The alert and recording rules (alerts/pgmsg.rules.yml) checked and unit-tested by promtool
from the deployed Prometheus image (or the host's promtool, if it has one), and a check that
every rule has a unit test that sees it fire and one that sees it stay quiet."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deployment import ROOT, Deployment
from tests.support.scratch import deployed_image

ALERTS = ROOT / "alerts"
RULES = ALERTS / "pgmsg.rules.yml"
TESTS = sorted((ALERTS / "tests").glob("*.test.yml"))


@pytest.fixture(scope="module")
def promtool(deployment: Deployment) -> list[str]:
    """The promtool command: the host's, else the deployed Prometheus image's, run without
    network with the alerts directory mounted read-only at the same path."""
    if found := shutil.which("promtool"):
        return [found]
    image = deployed_image(str(deployment.value("prometheus_container_name")))
    return [
        *("docker", "run", "--rm", "--network", "none", "--entrypoint", "promtool"),
        *("--mount", f"type=bind,source={ALERTS},target={ALERTS},readonly", image),
    ]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def unit_tests() -> list[dict[str, Any]]:
    return [test for path in TESTS for test in yaml.safe_load(path.read_text())["tests"]]


def test_promtool_accepts_the_rules(promtool: list[str]) -> None:
    result = run([*promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: list[str]) -> None:
    assert TESTS, "no alerts/tests/*.test.yml"
    result = run([*promtool, "test", "rules", *map(str, TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(promtool: list[str], tmp_path: Path) -> None:
    """The same check the deploy runs (roles/prometheus) fails on a bad expression, saying where."""
    broken = ALERTS / f".broken-{tmp_path.name}.rules.yml"
    broken.write_text(
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: rate(pgmsg_x[5m]\n"
    )
    try:
        result = run([*promtool, "check", "rules", str(broken)])
    finally:
        broken.unlink()
    assert result.returncode != 0
    assert "unclosed left parenthesis" in result.stdout + result.stderr


@pytest.mark.parametrize("rule", [r.get("alert") or r["record"] for r in rules()])
def test_every_rule_has_unit_tests(rule: str) -> None:
    """Each alert is seen firing and seen quiet; each recording rule is evaluated."""
    recorded = {r["record"] for r in rules() if "record" in r}
    if rule in recorded:
        exprs = [t["expr"] for test in unit_tests() for t in test.get("promql_expr_test", [])]
        assert any(rule in expr for expr in exprs), f"no promql_expr_test evaluates {rule}"
        return
    cases = [c for test in unit_tests() for c in test.get("alert_rule_test", []) if c["alertname"] == rule]
    assert any(c.get("exp_alerts") for c in cases), f"no test sees {rule} fire"
    assert any(not c.get("exp_alerts") for c in cases), f"no test sees {rule} stay quiet"
    severities = {r["labels"]["severity"] for r in rules() if r.get("alert") == rule}
    fired = {a["exp_labels"]["severity"] for c in cases for a in c.get("exp_alerts") or []}
    assert severities <= fired, f"{rule}: no test fires severity {severities - fired}"


def test_every_alert_tells_the_operator_what_to_do() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            assert len(rule["annotations"]["description"]) > 80, rule["alert"]
