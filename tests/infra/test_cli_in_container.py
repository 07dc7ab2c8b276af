"""The operator CLI is installed in the services image and works there with the
container's own (least-privilege) credentials."""

from __future__ import annotations

import json

import pytest

from tests.support.deployment import Deployment


@pytest.fixture(scope="module")
def consumer(deployment: Deployment) -> str:
    """A deployed consumer: an enabled service whose client (of the same name) subscribes async."""
    async_clients = {s["client_id"] for s in deployment.subscriptions if s["delivery_mode"] == "async"}
    return next(s for s in deployment.services if s in async_clients)


def test_cli_help_in_the_services_container(host, consumer: str) -> None:  # type: ignore[no-untyped-def]
    out = host.check_output("docker exec %s pgmsg --help", consumer)
    for command in (
        "publish",
        "subscriptions",
        "deliveries",
        "retry",
        "dead-letters",
        "replay",
        "archive",
        "purge",
        "health",
        "migrate",
    ):
        assert command in out


def test_cli_reads_the_client_s_own_deliveries_in_its_container(host, consumer: str) -> None:  # type: ignore[no-untyped-def]
    cmd = host.run("docker exec %s pgmsg deliveries list --client %s --limit 5 --json", consumer, consumer)
    assert cmd.rc == 0, cmd.stderr
    rows = json.loads(cmd.stdout)
    assert isinstance(rows, list)
    assert all(r["client_id"] == consumer for r in rows)


def test_row_level_security_applies_to_the_cli(host, consumer: str, deployment: Deployment) -> None:  # type: ignore[no-untyped-def]
    others = sorted({s["client_id"] for s in deployment.subscriptions} - {consumer})
    assert others
    for other in others:
        cmd = host.run("docker exec %s pgmsg deliveries list --client %s --json", consumer, other)
        assert cmd.rc == 0, cmd.stderr
        assert json.loads(cmd.stdout) == [], other


def test_cli_migrate_status_in_the_container_with_admin_credentials(host, hostvars, consumer: str) -> None:  # type: ignore[no-untyped-def]
    admin = hostvars["messaging_schema_admins"][0]
    cmd = host.run(
        "docker exec -e PGUSER=%s -e PGPASSWORD=%s -e PGPASSFILE=/dev/null %s pgmsg migrate status",
        admin["name"],
        admin["password"],
        consumer,
    )
    assert cmd.rc == 0, cmd.stdout + cmd.stderr
    assert "007_monitoring_access" in cmd.stdout
