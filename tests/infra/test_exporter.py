"""testinfra and scrapes against the exporters deployed with the local inventory:
prometheus-postgres-exporter (built-in pg_* metrics) and pgmsg-sql-exporter (the pgmsg_* metrics
and the seed's pg_message_delivery_status_count), two containers of one image."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgmsg import Client
from tests.support.cluster import Cluster, inventory_under_test
from tests.support.deployment import Deployment
from tests.support.scratch import deployed_image, free_port
from tests.support.waiting import wait_until

# The exporter reuses the whole-table query results for postgres_exporter_scan_cache_seconds
# (10 s by default); a scrape reflects a change well within this.
DEADLINE_SECONDS = 60.0


# The label names of every pgmsg metric, as prometheus-postgres-exporter gave them with
# --extend.query-path before pgmsg-sql-exporter served them: dashboards and alerts rely on them.
LABELS = {
    "pgmsg_backlog_oldest_age_seconds": {"client_id", "delivery_mode", "server"},
    "pgmsg_backup_last_check_age_seconds": {"server"},
    "pgmsg_backup_last_check_ok": {"server"},
    "pgmsg_backup_last_success_age_seconds": {"server", "type"},
    "pgmsg_cluster_is_leader": {"node", "server"},
    "pgmsg_cluster_replicas_streaming": {"node", "server"},
    "pgmsg_cluster_sync_standbys": {"node", "server"},
    "pgmsg_cluster_timeline": {"node", "server"},
    "pgmsg_dead_letters_count": {"client_id", "server"},
    "pgmsg_deferred_failed": {"server"},
    "pgmsg_deferred_oldest_waiting_age_seconds": {"server"},
    "pgmsg_deferred_waiting": {"server"},
    "pgmsg_deliveries_count": {"client_id", "delivery_mode", "server", "status"},
    "pgmsg_deliveries_finished_last_5m": {"client_id", "delivery_mode", "server", "status"},
    "pgmsg_dispatcher_last_seen_age_seconds": {"dispatcher", "server"},
    "pgmsg_dispatcher_pushed_total": {"dispatcher", "server"},
    "pgmsg_dispatcher_start_time_seconds": {"dispatcher", "server"},
    "pgmsg_http_attempts_last_5m": {"server", "status_class"},
    "pgmsg_messages_published_last_hour": {"message_type", "server"},
    "pgmsg_messages_published_total": {"server"},
    "pgmsg_retries_count": {"client_id", "delivery_mode", "server"},
    "pgmsg_transactions_idle_in_transaction": {"server"},
    "pgmsg_transactions_idle_in_transaction_oldest_seconds": {"server"},
    "pgmsg_transactions_oldest_seconds": {"server"},
    "pgmsg_transactions_oldest_xmin_age": {"server"},
    "pgmsg_replication_lag_bytes": {"replica", "sync_state", "server"},
    "pgmsg_replication_lag_seconds": {"replica", "sync_state", "server"},
    # The seed's metric (its queries.yaml for postgres_exporter).
    "pg_message_delivery_status_count": {"client_id", "status", "server"},
}
# Every metric present on a single node with the seeded data (a single node has no replicas;
# with backups on, the deploy takes a first check and full backup).
CUSTOM_METRICS = [m for m in LABELS if not m.startswith("pgmsg_replication_")]

Sample = tuple[str, dict[str, str], float]


@pytest.fixture(scope="module")
def container(deployment: Deployment) -> str:
    return deployment.exporter_container


def url(hostvars: dict[str, Any], port_variable: str) -> str:
    address = hostvars["postgres_exporter_listen_address"]
    if address in ("0.0.0.0", ""):
        address = "127.0.0.1"
    return f"http://{address}:{hostvars[port_variable]}/metrics"


@pytest.fixture(scope="module")
def builtin_url(hostvars: dict[str, Any]) -> str:
    """prometheus-postgres-exporter: its built-in pg_* metrics."""
    return url(hostvars, "postgres_exporter_port")


@pytest.fixture(scope="module")
def metrics_url(hostvars: dict[str, Any]) -> str:
    """pgmsg-sql-exporter: the pgmsg metrics."""
    return url(hostvars, "postgres_exporter_sql_port")


@pytest.fixture(scope="module", params=["exporter", "sql_exporter"])
def any_container(request: pytest.FixtureRequest, deployment: Deployment) -> str:
    """Each of the two exporter containers."""
    return str(getattr(deployment, request.param + "_container"))


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


def test_exporter_container_running_and_healthy(host, any_container, hostvars, deployment) -> None:  # type: ignore[no-untyped-def]
    container = host.docker(any_container)
    assert container.is_running

    def health() -> dict[str, Any]:
        return dict(container.inspect()["State"]["Health"])

    # Docker's verdict lags: after the cluster's failover drills a recovered exporter is called
    # healthy again only at its next passing probe (every 10 s). Longer is a failure, shown
    # with the probes' output and the exporter's log.
    try:
        wait_until(lambda: health()["Status"] == "healthy", timeout=90, interval=2)
    except AssertionError:
        last = health()
        raise AssertionError(
            f"{any_container} is {last['Status']} (failing streak {last['FailingStreak']}); probes: "
            f"{[(probe['ExitCode'], probe['Output'][-300:]) for probe in last['Log']]}; log: "
            + host.check_output(f"docker logs --tail 40 {any_container} 2>&1")[-4000:]
            + route_report(hostvars)
        ) from None
    info = container.inspect()
    assert info["HostConfig"]["RestartPolicy"]["Name"] == hostvars.get(
        "postgres_exporter_restart_policy", "unless-stopped"
    )
    assert info["HostConfig"]["NetworkMode"] == hostvars["postgres_exporter_network_mode"]
    assert info["Config"]["Image"].startswith(deployment.value("postgres_exporter_image_name") + ":")


def route_report(hostvars: dict[str, Any]) -> str:
    """In a cluster, HAProxy's view of the route the exporter takes (sessions and state per
    frontend, backend and member), for a failure to show whether the database or the route was
    stuck. Never raises: it only adds to a failure's message."""
    if "haproxy" not in hostvars.get("group_names", []):
        return ""
    try:
        rows = Cluster(inventory_under_test()).haproxy_rows()
    except Exception as exc:  # a report of a report: say why it is missing
        return f"; haproxy statistics unavailable: {exc}"
    return "; haproxy: " + " | ".join(
        f"{r.get('pxname')}/{r.get('svname')} {r.get('status')} sessions {r.get('scur')} queued {r.get('qcur')}"
        for r in rows
    )


def test_exporter_runs_as_non_root(host, any_container) -> None:  # type: ignore[no-untyped-def]
    assert host.check_output(f"docker exec {any_container} id -u") != "0"


@pytest.mark.parametrize("port_variable", ["postgres_exporter_port", "postgres_exporter_sql_port"])
def test_exporter_listens_on_loopback_only(host, hostvars, port_variable) -> None:  # type: ignore[no-untyped-def]
    port = hostvars[port_variable]
    assert host.socket(f"tcp://{hostvars['postgres_exporter_listen_address']}:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_dsn_file_is_readable_by_the_exporter_only(host, any_container) -> None:  # type: ignore[no-untyped-def]
    dsn_file = host.file("/etc/pgmsg/postgres_exporter_dsn")
    assert dsn_file.mode == 0o600
    assert str(dsn_file.uid) == host.check_output(f"docker exec {any_container} id -u")


def test_password_is_not_in_the_container_configuration(host, any_container, hostvars) -> None:  # type: ignore[no-untyped-def]
    password = hostvars["messaging_schema_monitors"][0]["password"]
    config = json.dumps(host.docker(any_container).inspect())
    assert password not in config


def test_exporter_reaches_postgres(builtin_url: str, metrics_url: str) -> None:
    assert value(scrape(builtin_url), "pg_up") == 1
    assert value(scrape(metrics_url), "pgmsg_sql_exporter_up") == 1


def test_a_held_table_lock_does_not_wedge_the_exporter(dsn: str, builtin_url: str) -> None:
    """postgres_exporter sets no query timeout, and its pg_stat_user_tables collector waits
    behind any ACCESS EXCLUSIVE lock (pg_total_relation_size of every table): without the DSN's
    statement timeout one such lock hung every scrape, and the healthcheck with them, for as
    long as it was held. Held here for longer than a scrape may take, on a table of the test's
    own: the scrape answers anyway, with that collector failed and pg_up 1; once the lock goes,
    the table is in the scrape again."""
    table = "exporter_lock_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
    try:
        with psycopg.connect(dsn) as holder:
            holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            locked = scrape(builtin_url)  # within scrape()'s 10 s, while the lock is held
            assert value(locked, "pg_up") == 1
            assert value(locked, "pg_stat_user_tables_n_live_tup", relname=table) is None
            assert value(locked, "pg_scrape_collector_success", collector="stat_user_tables") == 0
            holder.rollback()
        assert wait_until(
            lambda: value(scrape(builtin_url), "pg_stat_user_tables_n_live_tup", relname=table) is not None,
            timeout=30,
            interval=1,
            message=f"{table} in a scrape after the lock went",
        )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def test_postgres_exporter_runs_without_the_deprecated_query_path(host, container) -> None:  # type: ignore[no-untyped-def]
    """Built-in collectors only: no --extend.query-path, and so no pgmsg metric from it."""
    command = host.check_output(f"docker exec {container} cat /proc/1/cmdline").replace("\x00", " ")
    assert "prometheus-postgres-exporter" in command
    assert "extend.query-path" not in command


def test_builtin_and_pgmsg_metrics_are_served_apart(builtin_url: str, metrics_url: str) -> None:
    builtin = {n for n, _, _ in scrape(builtin_url)}
    pgmsg = {n for n, _, _ in scrape(metrics_url)}
    assert not {n for n in builtin if n.startswith("pgmsg_")}
    assert {"pg_stat_activity_count", "pg_database_size_bytes"} <= builtin
    assert not {n for n in pgmsg if n.startswith("pg_") and n != "pg_message_delivery_status_count"}


def test_the_sql_exporter_logs_in_as_the_monitoring_role(db, hostvars) -> None:  # type: ignore[no-untyped-def]
    """Least privilege: the monitoring login (a member of pgmsg_monitor), nothing else. Asked
    through the inventory's connection (the leader behind HAProxy in a cluster)."""
    monitor = hostvars["messaging_schema_monitors"][0]["name"]
    logins = wait_until(
        lambda: db.execute(
            "SELECT string_agg(DISTINCT usename, ',') AS logins FROM pg_stat_activity "
            "WHERE application_name = 'pgmsg-sql-exporter'"
        ).fetchone()["logins"],
        timeout=30,
        interval=0.5,
        message="a pgmsg-sql-exporter session",
    )
    assert logins == monitor


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


def test_every_metric_keeps_its_name_and_labels(metrics_url: str, seeded: dict[str, Any]) -> None:
    samples = scrape(metrics_url)
    for name, labels in LABELS.items():
        found = {frozenset(labelled) for n, labelled, _ in samples if n == name}
        if name.startswith("pgmsg_replication_") and not found:
            continue  # a single node has no replicas (test_single_node_... checks that)
        assert found == {frozenset(labels)}, f"{name}: {found}"


def test_seed_metric_counts_deliveries_by_client_and_status(metrics_url: str, seeded: dict[str, Any]) -> None:
    """pg_message_delivery_status_count{client_id, status}, the seed's series, beside
    pgmsg_deliveries_count: the same deliveries summed over the delivery modes."""
    client_id = seeded["client_id"]
    samples = wait_for_scrape(
        metrics_url,
        lambda s: value(s, "pg_message_delivery_status_count", client_id=client_id, status="dead") == 1,
        f"{client_id} has one dead delivery in the seed's metric",
    )
    assert value(samples, "pg_message_delivery_status_count", client_id=client_id, status="pending") == 1
    by_status: dict[tuple[str, str], float] = {}
    for name, labelled, v in samples:
        if name == "pgmsg_deliveries_count":
            key = (labelled["client_id"], labelled["status"])
            by_status[key] = by_status.get(key, 0) + v
    seed = {
        (labelled["client_id"], labelled["status"]): v
        for name, labelled, v in samples
        if name == "pg_message_delivery_status_count"
    }
    assert seed == by_status


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


def run_sql_exporter(
    deployment: Deployment, hostvars: dict[str, Any], tmp_path: Any, config: str, dsn: str
) -> tuple[str, int]:
    """A throwaway pgmsg-sql-exporter from the deployed image on a free loopback port, with its
    own collector file and DSN file; (container name, port)."""
    port = free_port()
    name = f"pgmsg-test-sql-exporter-{port}"
    (tmp_path / "metrics.yml").write_text(config)
    (tmp_path / "dsn").write_text(dsn)
    for path in (tmp_path, tmp_path / "metrics.yml", tmp_path / "dsn"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    subprocess.run(
        [
            *("docker", "run", "-d", "--name", name, "--network", "host"),
            *("--entrypoint", "/usr/local/bin/pgmsg-sql-exporter"),
            *("-e", "EXPORTER_LISTEN_ADDRESS=127.0.0.1", "-e", f"EXPORTER_PORT={port}"),
            *("-e", "DATA_SOURCE_NAME_FILE=/run/dsn", "-e", "PGMSG_SQL_EXPORTER_CONFIG=/run/metrics.yml"),
            *(
                "-v",
                f"{tmp_path / 'dsn'}:/run/dsn:ro",
                "-v",
                f"{tmp_path / 'metrics.yml'}:/run/metrics.yml:ro",
            ),
            deployed_image(deployment.sql_exporter_container),
        ],
        check=True,
        capture_output=True,
    )
    return name, port


def monitor_dsn(deployment: Deployment, hostvars: dict[str, Any]) -> str:
    monitor = hostvars["messaging_schema_monitors"][0]
    return (
        f"postgresql://{monitor['name']}:{monitor['password']}@127.0.0.1:{deployment.db_port}/"
        f"{deployment.db_name}?sslmode=disable"
    )


def test_a_failing_query_is_counted_and_the_others_still_served(
    deployment: Deployment, hostvars: dict[str, Any], tmp_path: Any
) -> None:
    """A query the monitoring role may not run (pg_authid) fails alone: counted in
    pgmsg_sql_exporter_query_errors_total, its metric left out, the good one served."""
    config = """
queries:
  - name: good
    query: SELECT 42 AS answer
    metrics:
      - {metric_name: test_answer, help: The answer., value: answer}
  - name: forbidden
    query: SELECT count(*) AS n FROM pg_authid
    metrics:
      - {metric_name: test_roles, help: Roles., value: n}
"""
    name, port = run_sql_exporter(deployment, hostvars, tmp_path, config, monitor_dsn(deployment, hostvars))
    try:
        wait_until_listening(port)
        samples = wait_for_scrape(
            f"http://127.0.0.1:{port}/metrics",
            lambda s: (value(s, "pgmsg_sql_exporter_query_errors_total", query="forbidden") or 0) >= 1,
            "the forbidden query is counted as failed",
            timeout=30,
        )
        assert value(samples, "test_answer") == 42
        assert value(samples, "pgmsg_sql_exporter_up") == 1
        assert value(samples, "pgmsg_sql_exporter_query_errors_total", query="good") == 0
        assert not [n for n, _, _ in samples if n == "test_roles"]
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=True).stderr
        assert "query forbidden failed: permission denied" in logs
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_a_wrong_password_reports_the_database_down(
    deployment: Deployment, hostvars: dict[str, Any], tmp_path: Any
) -> None:
    config = """
queries:
  - name: good
    query: SELECT 42 AS answer
    metrics:
      - {metric_name: test_answer, help: The answer., value: answer}
"""
    dsn = monitor_dsn(deployment, hostvars).replace(
        hostvars["messaging_schema_monitors"][0]["password"], "wrong"
    )
    name, port = run_sql_exporter(deployment, hostvars, tmp_path, config, dsn)
    try:
        wait_until_listening(port)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        assert value(samples, "pgmsg_sql_exporter_up") == 0
        assert not [n for n, _, _ in samples if n == "test_answer"]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("queries: []\n", "needs a non-empty list 'queries'"),
        (
            "queries:\n  - {name: q, query: SELECT 1 AS x, metrics: [{metric_name: m, value: x}]}\n",
            "queries[0] (q).metrics[0]: needs metric_name, help and value",
        ),
        (
            "queries:\n  - {name: q, query: SELECT 1 AS x,"
            " metrics: [{metric_name: m, help: h, value: x, type: counter}]}\n",
            "a counter's metric_name ends in _total",
        ),
        ("queries: [\n", "metrics.yml"),
    ],
)
def test_a_bad_collector_file_stops_with_a_clear_message(
    deployment: Deployment, hostvars: dict[str, Any], tmp_path: Any, config: str, message: str
) -> None:
    name, _ = run_sql_exporter(deployment, hostvars, tmp_path, config, monitor_dsn(deployment, hostvars))
    try:
        state = wait_until(
            lambda: (st := container_state(name))["Status"] == "exited" and st,
            timeout=30,
            interval=0.5,
            message="the exporter stops",
        )
        assert state["ExitCode"] == 1
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=True).stderr
        assert message in logs
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def container_state(name: str) -> dict[str, Any]:
    out = subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out)[0]["State"])


def wait_until_listening(port: int) -> bool:
    def answers() -> bool:
        try:
            scrape(f"http://127.0.0.1:{port}/metrics")
            return True
        except OSError:
            return False

    return wait_until(answers, timeout=30, interval=0.5, message=f"pgmsg-sql-exporter on port {port}")
