"""testinfra and scrapes against the postgres-exporter deployed with the local inventory."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgmsg import Client
from tests.support.deployment import Deployment

# The exporter reuses the whole-table query results for postgres_exporter_scan_cache_seconds
# (10 s by default); a scrape reflects a change well within this.
DEADLINE_SECONDS = 60.0

# Every metric of queries.yaml, as the exporter names its samples.
CUSTOM_METRICS = [
    "pgmsg_deliveries_count",
    "pgmsg_backlog_oldest_age_seconds",
    "pgmsg_retries_count",
    "pgmsg_dead_letters_count",
    "pgmsg_messages_published_total",
    "pgmsg_messages_published_last_hour",
    "pgmsg_deferred_waiting",
    "pgmsg_deferred_failed",
    "pgmsg_deferred_oldest_waiting_age_seconds",
    "pgmsg_dispatcher_last_seen_age_seconds",
    "pgmsg_dispatcher_pushed_total",
    "pgmsg_dispatcher_start_time_seconds",
    "pgmsg_http_attempts_last_5m",
    "pgmsg_transactions_idle_in_transaction",
    "pgmsg_transactions_idle_in_transaction_oldest_seconds",
    "pgmsg_transactions_oldest_seconds",
    "pgmsg_transactions_oldest_xmin_age",
    "pgmsg_cluster_is_leader",
    "pgmsg_cluster_timeline",
    "pgmsg_cluster_replicas_streaming",
    "pgmsg_cluster_sync_standbys",
    # With backups on (pgbackrest_enabled), the deploy takes a first check and full backup.
    "pgmsg_backup_last_success_age_seconds",
    "pgmsg_backup_last_check_ok",
    "pgmsg_backup_last_check_age_seconds",
]

Sample = tuple[str, dict[str, str], float]


@pytest.fixture(scope="module")
def container(deployment: Deployment) -> str:
    return deployment.exporter_container


@pytest.fixture(scope="module")
def metrics_url(hostvars: dict[str, Any]) -> str:
    address = hostvars.get("postgres_exporter_listen_address", "127.0.0.1")
    if address in ("0.0.0.0", ""):
        address = "127.0.0.1"
    return f"http://{address}:{hostvars.get('postgres_exporter_port', 9187)}/metrics"


def scrape(url: str) -> list[Sample]:
    """All samples of one scrape: (name, labels, value)."""
    # The exporter is on loopback: never ask a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        text = response.read().decode()
    return [
        (s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the one sample called name whose labels include labels, or None."""
    found = [v for n, labelled, v in samples if n == name and labels.items() <= labelled.items()]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


def wait_for_scrape(
    url: str, condition: Callable[[list[Sample]], bool], what: str, timeout: float = DEADLINE_SECONDS
) -> list[Sample]:
    """Scrape until condition holds for a scrape; fail with what after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if condition(samples):
            return samples
        if time.monotonic() > deadline:
            pgmsg = [s for s in samples if s[0].startswith("pgmsg_")]
            pytest.fail(f"no scrape within {timeout:.0f} s where {what}; last pgmsg samples: {pgmsg}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def seeded(client: Client, dsn: str) -> Iterator[dict[str, Any]]:
    """Data behind every custom metric, with known values: a client with one dead letter
    (max_attempts 1, claimed and nacked) and one pending delivery, and a dispatcher whose
    last heartbeat was a minute ago; removed afterwards."""
    tag = "t" + uuid.uuid4().hex[:10]
    client_id = tag + "-seed"
    dispatcher = tag + "-dispatcher"
    client.subscribe(client_id, "async", message_type=tag + ".*", max_attempts=1)
    client.publish(tag + ".seed", {})
    [delivery] = client.claim(client_id, 1)
    assert client.nack(delivery, error="seeded dead letter") == "dead"
    last_id = client.publish(tag + ".seed", {})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgmsg_dispatchers (name, started_at, last_seen, pushed) "
            "VALUES (%s, now() - interval '1 hour', now() - interval '60 seconds', 7)",
            (dispatcher,),
        )
    yield {"tag": tag, "client_id": client_id, "dispatcher": dispatcher, "last_id": last_id}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM pgmsg_dispatchers WHERE name = %s", (dispatcher,))
        conn.execute("DELETE FROM subscriptions WHERE client_id LIKE %s", (tag + "%",))
        conn.execute("DELETE FROM messages WHERE message_type LIKE %s", (tag + "%",))


def test_exporter_container_running_and_healthy(host, container, hostvars, deployment) -> None:  # type: ignore[no-untyped-def]
    container = host.docker(container)
    assert container.is_running
    info = container.inspect()
    assert info["State"]["Health"]["Status"] == "healthy"
    assert info["HostConfig"]["RestartPolicy"]["Name"] == hostvars.get(
        "postgres_exporter_restart_policy", "unless-stopped"
    )
    assert info["HostConfig"]["NetworkMode"] == hostvars["postgres_exporter_network_mode"]
    assert info["Config"]["Image"].startswith(deployment.value("postgres_exporter_image_name") + ":")


def test_exporter_runs_as_non_root(host, container) -> None:  # type: ignore[no-untyped-def]
    assert host.check_output(f"docker exec {container} id -u") != "0"


def test_exporter_listens_on_loopback_only(host, hostvars) -> None:  # type: ignore[no-untyped-def]
    port = hostvars["postgres_exporter_port"]
    assert host.socket(f"tcp://{hostvars['postgres_exporter_listen_address']}:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_dsn_file_is_readable_by_the_exporter_only(host, container) -> None:  # type: ignore[no-untyped-def]
    dsn_file = host.file("/etc/pgmsg/postgres_exporter_dsn")
    assert dsn_file.mode == 0o600
    assert str(dsn_file.uid) == host.check_output(f"docker exec {container} id -u")


def test_password_is_not_in_the_container_configuration(host, container, hostvars) -> None:  # type: ignore[no-untyped-def]
    password = hostvars["messaging_schema_monitors"][0]["password"]
    config = json.dumps(host.docker(container).inspect())
    assert password not in config


def test_exporter_reaches_postgres(metrics_url: str) -> None:
    assert value(scrape(metrics_url), "pg_up") == 1


@pytest.mark.parametrize("metric", CUSTOM_METRICS)
def test_custom_metric_present(
    metrics_url: str, seeded: dict[str, Any], hostvars: dict[str, Any], metric: str
) -> None:
    if metric.startswith("pgmsg_backup_") and not hostvars.get("pgbackrest_enabled", False):
        # Backups off in this inventory: nothing recorded, so no backup figure at all.
        assert not any(n == metric for n, _, _ in scrape(metrics_url)), f"{metric} without backups"
        return
    wait_for_scrape(
        metrics_url, lambda samples: any(n == metric for n, _, _ in samples), f"{metric} is present"
    )


def test_http_attempts_report_every_status_class(metrics_url: str) -> None:
    samples = scrape(metrics_url)
    classes = {labelled["status_class"] for n, labelled, _ in samples if n == "pgmsg_http_attempts_last_5m"}
    assert classes == {"2xx", "3xx", "4xx", "5xx", "error"}


def test_seeded_values(metrics_url: str, seeded: dict[str, Any]) -> None:
    client_id, dispatcher = seeded["client_id"], seeded["dispatcher"]
    samples = wait_for_scrape(
        metrics_url,
        lambda s: value(s, "pgmsg_retries_count", client_id=client_id, delivery_mode="async") == 1,
        f"{client_id} shows its one retry",
    )
    assert value(samples, "pgmsg_dead_letters_count", client_id=client_id) == 1
    assert (
        value(samples, "pgmsg_deliveries_count", client_id=client_id, delivery_mode="async", status="dead")
        == 1
    )
    assert (
        value(samples, "pgmsg_deliveries_count", client_id=client_id, delivery_mode="async", status="pending")
        == 1
    )
    age = value(samples, "pgmsg_backlog_oldest_age_seconds", client_id=client_id, delivery_mode="async")
    assert age is not None and 0 < age < 3600
    assert value(samples, "pgmsg_messages_published_last_hour", message_type=seeded["tag"] + ".seed") == 2
    published = value(samples, "pgmsg_messages_published_total")
    assert published is not None and published >= seeded["last_id"]
    assert value(samples, "pgmsg_dispatcher_pushed_total", dispatcher=dispatcher) == 7
    last_seen = value(samples, "pgmsg_dispatcher_last_seen_age_seconds", dispatcher=dispatcher)
    assert last_seen is not None and 60 <= last_seen < 3600
    started = value(samples, "pgmsg_dispatcher_start_time_seconds", dispatcher=dispatcher)
    assert started is not None and abs(time.time() - 3600 - started) < 600


def test_deliveries_count_follows_published_messages(metrics_url: str, client: Client, run_id: str) -> None:
    client_id = run_id + "-metrics"
    client.subscribe(client_id, "async", message_type=run_id + ".*")
    ids = [client.publish(run_id + ".m", {}) for _ in range(3)]
    samples = wait_for_scrape(
        metrics_url,
        lambda s: (
            value(s, "pgmsg_deliveries_count", client_id=client_id, delivery_mode="async", status="pending")
            == 3
        ),
        f'pgmsg_deliveries_count{{client_id="{client_id}",delivery_mode="async",status="pending"}} is 3',
    )
    assert value(samples, "pgmsg_dead_letters_count", client_id=client_id) == 0
    published = value(samples, "pgmsg_messages_published_total")
    assert published is not None and published >= max(ids)


def test_deferred_messages_are_reported_while_they_wait(
    metrics_url: str, client: Client, dsn: str, run_id: str
) -> None:
    """Held back from the deployed fan-out worker by its lock, a deferred message shows as waiting,
    with its age; once the lock is gone the worker moves it and the gauge returns to 0."""
    with psycopg.connect(dsn, autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(hashtext('pgmsg_fan_out_deferred'))")
        client.publish(run_id + ".deferred", {}, deferred=True)
        wait_for_scrape(
            metrics_url,
            lambda s: (
                (value(s, "pgmsg_deferred_waiting") or 0) >= 1
                and (value(s, "pgmsg_deferred_oldest_waiting_age_seconds") or 0) > 0
            ),
            "a deferred message waits",
        )
    wait_for_scrape(metrics_url, lambda s: value(s, "pgmsg_deferred_waiting") == 0, "the worker moved it")


def test_single_node_reports_itself_as_the_writable_node_without_replicas(
    metrics_url: str, hostvars: dict[str, Any]
) -> None:
    samples = scrape(metrics_url)
    if hostvars.get("pgmsg_ha_enabled"):
        # tests/ha/test_cluster_reporting.py checks the cluster's figures.
        assert value(samples, "pgmsg_cluster_replicas_streaming") == 2
        return
    assert value(samples, "pgmsg_cluster_is_leader", node="single") == 1
    assert value(samples, "pgmsg_cluster_replicas_streaming", node="single") == 0
    assert value(samples, "pgmsg_cluster_sync_standbys", node="single") == 0
    assert (value(samples, "pgmsg_cluster_timeline", node="single") or 0) >= 1
    assert not [n for n, _, _ in samples if n.startswith("pgmsg_replication_")]
