"""The inventories: secrets stay out of the repository, weak passwords are refused."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_BIN = Path(sys.executable).parent


def validate(environment: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run only the settings checks of site.yml against an inventory, on this machine."""
    return subprocess.run(
        [str(ANSIBLE_BIN / "ansible-playbook"), "-i", f"inventory/{environment}/hosts.yml", "site.yml",
         "--tags", "validate", "-e", "ansible_connection=local", "-e", "pgmsg_become=false",
         "-e", f"ansible_python_interpreter={sys.executable}", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_no_clear_text_secret_in_shared_inventories(environment: str) -> None:
    for path in (ROOT / "inventory" / environment).rglob("*.yml"):
        for line in path.read_text().splitlines():
            if re.search(r"password\s*:", line) and not line.lstrip().startswith("#"):
                assert re.search(r'"\{\{\s*vault_\w+\s*\}\}"', line), f"{path}: {line}"


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_deploy_without_vault_is_refused(environment: str) -> None:
    run = validate(environment)
    assert run.returncode != 0
    assert "postgres_superuser_password is not set" in run.stdout + run.stderr


@pytest.mark.parametrize("password", ["admin", "postgres", "short-but-new", "pgmsg-local-dev-only"])
def test_weak_or_local_password_is_refused_outside_local(password: str) -> None:
    run = validate("production", "-e", json.dumps({"vault_postgres_superuser_password": password}))
    assert run.returncode != 0
    assert "needs a strong, vaulted password" in run.stdout


def test_strong_password_passes_the_checks() -> None:
    run = validate("production", "-e", json.dumps({"vault_postgres_superuser_password": "Qm9v-long-random-secret-7731"}))
    assert run.returncode == 0, run.stdout[-3000:]


def test_local_inventory_accepts_its_development_password() -> None:
    run = validate("local")
    assert run.returncode == 0, run.stdout[-3000:]
