"""An end-to-end flow through the deployed sample services, driven by the publisher."""

from __future__ import annotations

import collections
import fnmatch
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.deployment import Deployment
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CATALOG = yaml.safe_load((ROOT / "roles/pgmsg_services/defaults/main.yml").read_text())[
    "pgmsg_services_catalog"
]
PUBLISHER = "/usr/local/bin/pgmsg-publisher"


def metric(port: int, name: str, **labels: str) -> float:
    """The value of one sample on a service's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def processed(service: str) -> float:
    mode = {"pgmsg-consumer": "async", "pgmsg-listener": "notify", "pgmsg-webhook-server": "http"}
    entry = CATALOG[service]
    return metric(
        entry["metrics_port"],
        "pgmsg_processed_messages_total",
        client_id=service,
        delivery_mode=mode[entry["command"][0]],
    )


@pytest.mark.parametrize("deferred", [False, True], ids=["in-transaction", "deferred"])
def test_publisher_flow_reaches_every_sample_service(
    db: psycopg.Connection[Any], deployment: Deployment, deferred: bool
) -> None:
    """Both publish modes; deferred messages reach the services through the deployed fan-out worker."""
    # A sample service is named after its client (roles/pgmsg_services).
    services = [s for s in deployment.services if s in {sub["client_id"] for sub in deployment.subscriptions}]
    before = {s: processed(s) for s in services}
    dispatched = metric(
        CATALOG["http-dispatcher"]["metrics_port"], "pgmsg_webhooks_pushed_total", outcome="delivered"
    )
    fanned_out = metric(CATALOG["fan-out"]["metrics_port"], "pgmsg_deferred_fanned_out_total")

    run = subprocess.run(
        [PUBLISHER, "-f", "order_created.json", "-f", "user_registered.json"]
        + (["--deferred"] if deferred else []),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    ids = [int(i) for i in re.findall(r"published \S+ as message (\d+)", run.stdout)]
    assert len(ids) == 2
    # The stats table the publisher prints, grouped by mode.
    assert re.search(r"^mode\s+status\s+count$", run.stdout, re.MULTILINE)
    assert re.search(r"^notify\s+notified\s+2$", run.stdout, re.MULTILINE)

    order, user = ids
    # Every subscription the inventory declares for order.created and user.registered: webhook-server
    # (http), analytics + reporting (async), dashboard (notify); analytics (async), admin-portal (notify).
    matching = [
        (sub["client_id"], message_id)
        for message_id, message_type in ((order, "order.created"), (user, "user.registered"))
        for sub in deployment.subscriptions
        if fnmatch.fnmatchcase(message_type, sub["message_type"])
    ]
    expected = set(matching)
    assert {c for c, _ in expected} == set(services)

    def finished() -> bool:
        rows = db.execute(
            "SELECT client_id, message_id, status FROM message_delivery WHERE message_id = ANY(%s)", (ids,)
        ).fetchall()
        return {(r["client_id"], r["message_id"]) for r in rows} == expected and all(
            r["status"] in ("delivered", "notified") for r in rows
        )

    wait_until(finished, timeout=30)
    increments = collections.Counter(client for client, _ in matching)
    wait_until(lambda: all(processed(s) >= before[s] + n for s, n in increments.items()), timeout=20)
    assert (
        metric(CATALOG["http-dispatcher"]["metrics_port"], "pgmsg_webhooks_pushed_total", outcome="delivered")
        >= dispatched + 1
    )
    moved = metric(CATALOG["fan-out"]["metrics_port"], "pgmsg_deferred_fanned_out_total") - fanned_out
    if deferred:
        assert moved >= 2


def test_webhook_server_verified_the_signature(db: psycopg.Connection[Any]) -> None:
    """The delivery to webhook-server was accepted (2xx), which it does only for a valid signature;
    an unsigned request is refused and counted."""
    refused_before = metric(
        CATALOG["webhook-server"]["metrics_port"],
        "pgmsg_webhooks_rejected_total",
        client_id="webhook-server",
        reason="missing webhook-id header",
    )
    request = urllib.request.Request(
        "http://127.0.0.1:8080/webhook",
        data=b'{"id": 1}',
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401
    assert (
        metric(
            CATALOG["webhook-server"]["metrics_port"],
            "pgmsg_webhooks_rejected_total",
            client_id="webhook-server",
            reason="missing webhook-id header",
        )
        == refused_before + 1
    )


def test_publisher_exposes_its_counter_while_running() -> None:
    proc = subprocess.Popen(
        [PUBLISHER, "-f", "payment_failed.json", "--wait", "0", "--linger", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        value = wait_until(lambda: _published_or_none(), timeout=30)
        assert value == 1.0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _published_or_none() -> float | None:
    try:
        return (
            metric(8001, "pgmsg_published_messages_total", message_type="payment.failed", namespace="billing")
            or None
        )
    except OSError:
        return None


def test_missing_message_file_is_a_clear_error() -> None:
    run = subprocess.run(
        [PUBLISHER, "-f", "no_such_message.json"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert "no_such_message.json: cannot be read" in run.stderr
