"""testinfra: the sample services and the housekeeping jobs as deployed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CATALOG = yaml.safe_load((ROOT / "roles/pgmsg_services/defaults/main.yml").read_text())[
    "pgmsg_services_catalog"
]
HOUSEKEEPING = yaml.safe_load((ROOT / "roles/housekeeping/defaults/main.yml").read_text())
# What the local inventory enables, read at collection time to parametrize.
ENABLED = yaml.safe_load((ROOT / "inventory/local/group_vars/all/main.yml").read_text())[
    "pgmsg_services_enabled"
]


def enabled(hostvars: dict[str, Any]) -> list[str]:
    return list(hostvars.get("pgmsg_services_enabled", []))


def test_inventory_enables_the_seed_services(hostvars) -> None:  # type: ignore[no-untyped-def]
    assert sorted(enabled(hostvars)) == sorted(ENABLED) == sorted(CATALOG)


@pytest.mark.parametrize("service", ENABLED)
def test_enabled_service_runs_healthy(host, service: str) -> None:  # type: ignore[no-untyped-def]
    container = host.docker(service)
    assert container.is_running
    state = container.inspect()["State"]
    assert state["Health"]["Status"] == "healthy", state["Health"]["Log"][-1:]
    assert container.inspect()["Config"]["User"] == "pgmsg"
    assert container.inspect()["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"


@pytest.mark.parametrize("service", ENABLED)
def test_metrics_port_listens_on_loopback_only(host, service: str) -> None:  # type: ignore[no-untyped-def]
    port = CATALOG[service]["metrics_port"]
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    metrics = host.check_output(f"curl -sf http://127.0.0.1:{port}/metrics")
    assert any(
        name in metrics
        for name in (
            "pgmsg_processing_seconds",
            "pgmsg_webhooks_pushed_total",
            "pgmsg_deferred_fanned_out_total",
        )
    )


def test_webhook_endpoint_listens_and_refuses_unsigned(host, deployment) -> None:  # type: ignore[no-untyped-def]
    # Where the inventory's webhook-server subscription pushes.
    [url] = [
        deployment.render(s["webhook_url"])
        for s in deployment.subscriptions
        if s["client_id"] == "webhook-server"
    ]
    port = int(deployment.value("pgmsg_services_webhook_port"))
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    status = host.check_output(
        "curl -s -o /dev/null -w '%%{http_code}' -X POST -H 'Content-Type: application/json' "
        "-d '{\"id\": 1}' %s",
        url,
    )
    assert status == "401"


@pytest.mark.parametrize(
    "service", [s for s in sorted(CATALOG) if CATALOG[s]["login_as"] != "none"] + ["publisher"]
)
def test_pgpass_files_are_private_to_the_service_user(host, service: str) -> None:  # type: ignore[no-untyped-def]
    secret = host.file(f"/etc/pgmsg/services/{service}.pgpass")
    assert secret.exists and secret.mode == 0o600 and secret.uid == 10001


def test_no_password_in_service_environment(host, hostvars) -> None:  # type: ignore[no-untyped-def]
    passwords = [
        r["password"]
        for key in ("messaging_schema_clients", "messaging_schema_dispatchers")
        for r in hostvars.get(key, [])
    ]
    for service in enabled(hostvars):
        env = "\n".join(host.docker(service).inspect()["Config"]["Env"])
        assert not any(p in env for p in passwords), service


def test_publisher_command_is_installed(host) -> None:  # type: ignore[no-untyped-def]
    command = host.file("/usr/local/bin/pgmsg-publisher")
    assert command.exists and command.mode == 0o755
    assert "Usage: pgmsg-publisher" in host.check_output("/usr/local/bin/pgmsg-publisher --help")


def test_image_ships_pgmsg_publisher_not_the_old_name(host, hostvars) -> None:  # type: ignore[no-untyped-def]
    """The console script is pgmsg-publisher, like every other pgmsg command; the seed's bare
    ``publisher`` is gone from the image (its default command is the new name)."""
    image = host.docker(enabled(hostvars)[0]).inspect()["Config"]["Image"]
    found = host.run(
        "docker run --rm --entrypoint sh %s -c %s", image, "command -v pgmsg-publisher publisher"
    )
    assert found.stdout.split() == ["/opt/pgmsg/venv/bin/pgmsg-publisher"], found.stdout
    config = host.check_output("docker image inspect --format '{{json .Config.Cmd}}' %s", image)
    assert config == '["pgmsg-publisher","--help"]'


@pytest.mark.parametrize("job", [j["name"] for j in HOUSEKEEPING["housekeeping_jobs"]])
def test_housekeeping_job_is_scheduled(db: psycopg.Connection[dict[str, Any]], job: str) -> None:
    # Through the deployment's address: the single node, or the cluster's leader.
    row = db.execute("SELECT schedule, active FROM cron.job WHERE jobname = %s", (f"pgmsg-{job}",)).fetchone()
    assert row is not None and row["active"] and row["schedule"]
