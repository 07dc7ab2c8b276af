"""The operator CLI is installed in the services image and works there with the
container's own (least-privilege) credentials."""

from __future__ import annotations

import json

import pytest


def test_cli_help_in_the_services_container(host) -> None:  # type: ignore[no-untyped-def]
    out = host.check_output("docker exec analytics-service pgmsg --help")
    for command in ("publish", "subscriptions", "deliveries", "retry", "dead-letters", "replay", "archive",
                    "purge", "health", "migrate"):
        assert command in out


def test_cli_reads_the_client_s_own_deliveries_in_its_container(host) -> None:  # type: ignore[no-untyped-def]
    cmd = host.run("docker exec analytics-service pgmsg deliveries list --client analytics-service --limit 5 --json")
    assert cmd.rc == 0, cmd.stderr
    rows = json.loads(cmd.stdout)
    assert isinstance(rows, list)
    assert all(r["client_id"] == "analytics-service" for r in rows)


@pytest.mark.parametrize("other", ["reporting-service", "webhook-server"])
def test_row_level_security_applies_to_the_cli(host, other: str) -> None:  # type: ignore[no-untyped-def]
    cmd = host.run(f"docker exec analytics-service pgmsg deliveries list --client {other} --json")
    assert cmd.rc == 0, cmd.stderr
    assert json.loads(cmd.stdout) == []


def test_cli_migrate_status_in_the_container_with_admin_credentials(host) -> None:  # type: ignore[no-untyped-def]
    admin = host.ansible.get_variables()["messaging_schema_admins"][0]
    cmd = host.run(
        "docker exec -e PGUSER=%s -e PGPASSWORD=%s -e PGPASSFILE=/dev/null analytics-service pgmsg migrate status",
        admin["name"], admin["password"])
    assert cmd.rc == 0, cmd.stdout + cmd.stderr
    assert "007_monitoring_access" in cmd.stdout
