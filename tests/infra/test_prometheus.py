"""The Prometheus deployed with the local inventory: running as non-root on loopback only,
scraping the exporter and every service, with pgmsg's rules loaded; and one real alert made to
fire against the deployed stack (new dead letters)."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from typing import Any

import pytest
import yaml

from pgmsg import Client
from tests.support.deployment import ROOT, Deployment
from tests.support.waiting import wait_until

RULES = ROOT / "alerts" / "pgmsg.rules.yml"


@pytest.fixture(scope="module")
def container(deployment: Deployment) -> str:
    return str(deployment.value("prometheus_container_name"))


@pytest.fixture(scope="module")
def api(hostvars: dict[str, Any]) -> str:
    return f"http://{hostvars['prometheus_listen_address']}:{hostvars['prometheus_port']}/api/v1"


def get(url: str) -> Any:
    """The data of a Prometheus API answer (on loopback: never through a proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def query(api: str, promql: str) -> list[dict[str, Any]]:
    return list(get(f"{api}/query?" + urllib.parse.urlencode({"query": promql}))["result"])


def test_prometheus_runs_healthy_as_non_root(host, container) -> None:  # type: ignore[no-untyped-def]
    docker = host.docker(container)
    assert docker.is_running
    assert docker.inspect()["State"]["Health"]["Status"] == "healthy"
    assert host.check_output(f"docker exec {container} id -u") != "0"


def test_prometheus_listens_on_loopback_only(host, hostvars) -> None:  # type: ignore[no-untyped-def]
    port = hostvars["prometheus_port"]
    assert hostvars["prometheus_listen_address"] == "127.0.0.1"
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_every_target_is_scraped_and_up(api: str, deployment: Deployment) -> None:
    """The exporter and every enabled service with a metrics port, each up."""
    catalog = deployment.value("pgmsg_services_catalog")
    services = {s for s in deployment.services if "metrics_port" in catalog[s]}

    def all_up() -> list[dict[str, Any]] | None:
        targets = get(f"{api}/targets?state=active")["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_until(all_up, timeout=60, interval=1, message="every target up")
    jobs = {t["labels"]["job"] for t in targets}
    assert {"pgmsg-exporter", "pgmsg-services"} <= jobs
    scraped = {t["labels"]["service"] for t in targets if t["labels"]["job"] == "pgmsg-services"}
    assert scraped == services


def test_every_rule_is_loaded(api: str) -> None:
    groups = get(f"{api}/rules")["groups"]
    loaded = {(r["type"], r["name"]) for g in groups for r in g["rules"]}
    expected = {
        ("alerting", r["alert"]) if "alert" in r else ("recording", r["record"])
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
    }
    assert expected == loaded
    assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups


def test_recording_rule_gives_deliveries_per_second_per_client(api: str, client: Client, run_id: str) -> None:
    client_id = run_id + "-rate"
    client.subscribe(client_id, "async", message_type=run_id + ".rate.*")
    for _ in range(3):
        client.publish(run_id + ".rate.m", {})
    client.ack(client.claim(client_id, 3))
    wait_until(
        lambda: [
            s
            for s in query(api, f'client_id:pgmsg_deliveries:rate5m{{client_id="{client_id}"}}')
            if abs(float(s["value"][1]) - 3 / 300) < 1e-9
        ],
        timeout=60,
        interval=1,
        message=f"3 deliveries in 5 minutes recorded as 0.01/s for {client_id}",
    )


def test_new_dead_letters_fire_an_alert(api: str, client: Client, run_id: str) -> None:
    """End to end: a delivery that uses up its only attempt becomes a dead letter, the exporter
    reports it, Prometheus scrapes it and PgmsgDeadLettersGrowing fires for that client."""
    client_id = run_id + "-alert"
    client.subscribe(client_id, "async", message_type=run_id + ".alert.*", max_attempts=1)
    # The client's series starts at 0 (a subscribed client without dead letters) ...
    wait_until(
        lambda: query(api, f'pgmsg_dead_letters_count{{client_id="{client_id}"}} == 0'),
        timeout=60,
        interval=1,
        message=f"Prometheus sees {client_id} without dead letters",
    )
    # ... and grows by one.
    client.publish(run_id + ".alert.m", {})
    [delivery] = client.claim(client_id, 1)
    assert client.nack(delivery, error="made to fail by the alert test") == "dead"

    def firing() -> list[dict[str, Any]]:
        return [
            a
            for a in get(f"{api}/alerts")["alerts"]
            if a["labels"]["alertname"] == "PgmsgDeadLettersGrowing"
            and a["labels"].get("client_id") == client_id
            and a["state"] == "firing"
        ]

    [alert] = wait_until(firing, timeout=90, interval=1, message="PgmsgDeadLettersGrowing firing")
    assert alert["labels"]["severity"] == "warning"
    assert f"pgmsg dead-letters list --client {client_id}" in alert["annotations"]["description"]


def test_a_broken_rule_fails_the_deploy_and_keeps_the_running_rules(container: str, tmp_path: Any) -> None:
    """promtool checks the rules before they replace the deployed ones: the deploy stops with
    promtool's message and Prometheus keeps the last good rules."""
    broken = tmp_path / "broken.rules.yml"
    broken.write_text("groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: up ==\n")
    before = subprocess.run(
        ["docker", "exec", container, "cat", "/etc/prometheus/rules/pgmsg.rules.yml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "ansible-playbook"),
            *("-i", str(ROOT / "inventory" / "local" / "hosts.yml"), "playbooks/monitoring.yml"),
            *("--tags", "prometheus", "-e", json.dumps({"prometheus_rule_files": [str(broken)]})),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert "failed to validate" in result.stdout
    assert "broken.rules.yml" in result.stdout or "/check/rules.yml" in result.stdout
    assert "parse error" in result.stdout
    after = subprocess.run(
        ["docker", "exec", container, "ls", "/etc/prometheus/rules"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert after == ["pgmsg.rules.yml"]
    assert before == (ROOT / "alerts" / "pgmsg.rules.yml").read_text()
