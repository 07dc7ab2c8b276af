"""``site.yml --check --diff`` changes nothing, runs no migration, and says what a deploy would do:
against the deployed stack, against a copy of the repository with one more migration, and
against a host where nothing is deployed yet."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import INVENTORY
from tests.support.deployment import Deployment
from tests.support.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def check_mode(root: Path, inventory: Path) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook site.yml --check --diff`` from ``root``; its recap must say no failure."""
    run = subprocess.run(
        [str(PLAYBOOK), "-i", str(inventory), "site.yml", "--check", "--diff"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        # A copy has no ./collections (installed, not tracked): the repository's serve it.
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections")},
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    recap = RECAP.findall(run.stdout)
    assert recap, run.stdout[-2000:]
    assert all(failed == "0" and unreachable == "0" for _, _, unreachable, failed in recap), recap
    return run


def said(run: subprocess.CompletedProcess[str]) -> str:
    """The output with every run of white space as one space (the callback wraps long messages)."""
    return " ".join(run.stdout.split())


def changed_count(run: subprocess.CompletedProcess[str]) -> int:
    return sum(int(changed) for _, changed, _, _ in RECAP.findall(run.stdout))


def copy_repository(target: Path) -> Path:
    """The working tree's files (tracked and new, not ignored: no venv, no build output)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.deploy
def test_check_mode_against_the_deployed_stack_changes_nothing() -> None:
    run = check_mode(ROOT, INVENTORY)
    assert changed_count(run) == 0, [line for line in run.stdout.splitlines() if line.startswith("changed:")]


@pytest.mark.deploy
def test_check_mode_names_a_pending_migration_and_does_not_run_it(
    tmp_path: Path, deployment: Deployment, psql: Callable[[str], str], receiver: Receiver
) -> None:
    copy = copy_repository(tmp_path / "repo")
    migrations = sorted((copy / "sql" / "migrations").glob("*.sql.j2"))
    version = int(migrations[-1].name[:3]) + 1
    name = f"{version:03d}_check_mode_probe"
    table = "pgmsg_check_mode_probe"
    # DDL, and a request that would reach the receiver even if the transaction were rolled back:
    # check mode must neither apply the migration nor run it and roll it back.
    (copy / "sql" / "migrations" / f"{name}.sql.j2").write_text(
        f"CREATE TABLE {table} (id int);\nSELECT http_get('{receiver.url}');\n"
    )

    run = check_mode(copy, copy / INVENTORY.relative_to(ROOT))

    assert f"would apply migrations {version:03d} ({name})" in said(run), run.stdout[-6000:]
    assert psql(f"SELECT to_regclass('{table}') IS NULL") == "t"
    assert psql(f"SELECT count(*) FROM pgmsg_migrations WHERE version = {version}") == "0"
    assert receiver.requests == []


@pytest.mark.deploy
def test_check_mode_on_a_fresh_host_says_what_it_would_do(tmp_path: Path) -> None:
    """A second inventory host on this machine with names and ports of its own: no images,
    containers, volumes or database of its names exist, and check mode must say it would make
    them, not wait for them."""
    prefix = "pgmsg-checkfresh"
    local = yaml.safe_load((INVENTORY.parent / "group_vars" / "all" / "main.yml").read_text())
    fresh: dict[str, Any] = {
        **local,
        "postgres_image_name": f"{prefix}/postgres",
        "pgmsg_services_image_name": f"{prefix}/services",
        "postgres_exporter_image_name": f"{prefix}/postgres-exporter",
        "pgadmin_image_name": f"{prefix}/pgadmin",
        "postgres_container_name": f"{prefix}-postgres",
        "postgres_exporter_container_name": f"{prefix}-exporter",
        "pgadmin_container_name": f"{prefix}-pgadmin",
        "postgres_data_volume": f"{prefix}-postgres-data",
        "pgadmin_data_volume": f"{prefix}-pgadmin-data",
        "pgbackrest_repo_volume": f"{prefix}-backup-repo",
        # A port where nothing answers: the fresh host's database does not exist yet.
        "postgres_port": 1,
        # Service containers are named after the services: none here, so none is the stack's.
        "pgmsg_services_enabled": [],
    }
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "main.yml").write_text(yaml.safe_dump(fresh))
    (inventory / "hosts.yml").write_text((INVENTORY).read_text())

    def present() -> dict[str, str]:
        return {
            kind: subprocess.run(
                ["docker", kind, "ls", "--all", "--format", "{{.Names}}"]
                if kind == "container"
                else [
                    "docker",
                    kind,
                    "ls",
                    "--format",
                    "{{.Name}}" if kind == "volume" else "{{.Repository}}",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for kind in ("container", "volume", "image")
        }

    run = check_mode(ROOT, inventory / "hosts.yml")

    for image in ("postgres", "services", "postgres-exporter", "pgadmin"):
        assert re.search(rf"Would build {prefix}/{image}:[0-9a-f]{{12}}", run.stdout), image
    assert "The database does not answer" in said(run)
    assert re.search(r"would apply migrations 001, 002, .*\(001_", said(run)), run.stdout[-6000:]
    assert all(prefix not in listed for listed in present().values()), present()
