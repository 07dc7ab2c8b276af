"""The inventories: secrets stay out of the repository in clear, example and weak secrets are refused."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_BIN = Path(sys.executable).parent
EXAMPLE_VAULT_PASSWORD = ROOT / "inventory" / "example-vault-password.txt"
SHARED = ["staging", "production"]


def validate(environment: str, *extra: str, vault: bool = True) -> subprocess.CompletedProcess[str]:
    """Run only the settings checks of site.yml against an inventory, on this machine."""
    vault_args = ["--vault-password-file", str(EXAMPLE_VAULT_PASSWORD)] if vault else []
    return subprocess.run(
        [
            str(ANSIBLE_BIN / "ansible-playbook"),
            "-i",
            f"inventory/{environment}/hosts.yml",
            "site.yml",
            "--tags",
            "validate",
            "-e",
            "ansible_connection=local",
            "-e",
            "pgmsg_become=false",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            *vault_args,
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def example_vault(environment: str) -> dict[str, str]:
    out = subprocess.run(
        [
            str(ANSIBLE_BIN / "ansible-vault"),
            "view",
            "--vault-password-file",
            str(EXAMPLE_VAULT_PASSWORD),
            f"inventory/{environment}/group_vars/all/vault.yml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return yaml.safe_load(out)


@pytest.mark.parametrize("environment", SHARED)
def test_no_clear_text_secret_in_shared_inventories(environment: str) -> None:
    for path in (ROOT / "inventory" / environment).rglob("*.yml"):
        text = path.read_text()
        if text.startswith("$ANSIBLE_VAULT;"):
            continue
        for line in text.splitlines():
            if re.search(r"(password|secret)\s*:", line) and not line.lstrip().startswith("#"):
                assert re.search(r'"\{\{\s*vault_\w+\s*\}\}"', line), f"{path}: {line}"


@pytest.mark.parametrize("environment", SHARED)
def test_example_vault_is_encrypted_and_covers_every_vault_variable(environment: str) -> None:
    vault_file = ROOT / "inventory" / environment / "group_vars" / "all" / "vault.yml"
    assert vault_file.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    used = referenced_vault_variables(environment)
    secrets = example_vault(environment)
    assert used and used <= set(secrets)
    assert all(v.startswith("REPLACE-ME") for v in secrets.values())


def referenced_vault_variables(environment: str) -> set[str]:
    """Every ``{{ vault_... }}`` the inventory's files use (the vault files themselves aside)."""
    used: set[str] = set()
    for path in (ROOT / "inventory" / environment).rglob("*.yml"):
        if path.name != "vault.yml":
            used |= set(re.findall(r"\{\{\s*(vault_\w+)\s*\}\}", path.read_text()))
    return used


def vault_example_file(environment: str) -> Path:
    return ROOT / "inventory" / environment / "group_vars" / "all" / "vault.yml.example"


@pytest.mark.parametrize("environment", SHARED)
def test_vault_example_names_exactly_the_vaulted_variables(environment: str) -> None:
    """vault.yml.example, which group_vars/all/main.yml points to, lists every vault_* variable the
    inventory references and nothing else, in clear, each a placeholder the roles refuse."""
    main = (ROOT / "inventory" / environment / "group_vars" / "all" / "main.yml").read_text()
    assert "vault.yml.example" in main
    text = vault_example_file(environment).read_text()
    assert not text.startswith("$ANSIBLE_VAULT")
    example = yaml.safe_load(text)
    used = referenced_vault_variables(environment)
    assert used, environment
    assert set(example) - used == set(), "in the example but used nowhere"
    assert used - set(example) == set(), "used but missing from the example"
    assert set(example) == set(example_vault(environment)), "the example and the committed vault.yml differ"
    assert all("REPLACE-ME" in str(v) for v in example.values())


@pytest.mark.parametrize("environment", SHARED)
def test_deploy_with_the_vault_example_values_is_refused(environment: str) -> None:
    """Copied and encrypted without editing, the example cannot be deployed by accident."""
    run = validate(environment, "-e", f"@{vault_example_file(environment)}")
    assert run.returncode != 0
    assert "needs a strong, vaulted" in run.stdout + run.stderr


@pytest.mark.parametrize("environment", SHARED)
def test_deploy_without_the_vault_password_is_refused(environment: str) -> None:
    run = validate(environment, vault=False)
    assert run.returncode != 0
    assert "vault" in (run.stdout + run.stderr).lower()


@pytest.mark.parametrize("environment", SHARED)
def test_deploy_with_the_example_secrets_is_refused(environment: str) -> None:
    run = validate(environment)
    assert run.returncode != 0
    # The first role to check a REPLACE-ME secret refuses (pgbackrest's come before postgres's).
    assert "needs a strong, vaulted" in run.stdout + run.stderr


@pytest.mark.parametrize("password", ["admin", "postgres", "short-but-new", "pgmsg-local-dev-only"])
def test_weak_or_local_password_is_refused_outside_local(password: str) -> None:
    strong = {k: "Qm9v-long-random-secret-7731" for k in example_vault("production")}
    run = validate("production", "-e", json.dumps({**strong, "vault_postgres_superuser_password": password}))
    assert run.returncode != 0
    assert "needs a strong, vaulted password" in run.stdout


@pytest.mark.parametrize(
    "password", ["admin", "PgAdmin4", "pgmsg-local-dev-only", "pgadmin-local-dev-only", "tiny-pass"]
)
def test_weak_pgadmin_password_is_refused_outside_local(password: str) -> None:
    strong = {k: "Qm9v-long-random-secret-7731" for k in example_vault("production")}
    run = validate("production", "-e", json.dumps({**strong, "vault_pgadmin_password": password}))
    assert run.returncode != 0
    assert "needs a strong, vaulted pgAdmin password (vault_pgadmin_password)" in run.stdout
    if len(password) > 5:  # "admin" is in many a line; a distinctive password must not be shown
        assert password not in run.stdout + run.stderr


def test_weak_backup_passphrase_is_refused_outside_local() -> None:
    strong = {k: "Qm9v-long-random-secret-7731" for k in example_vault("production")}
    run = validate(
        "production", "-e", json.dumps({**strong, "vault_pgbackrest_repo_cipher_pass": "short-pass"})
    )
    assert run.returncode != 0
    assert "needs a strong, vaulted repository passphrase" in run.stdout + run.stderr
    assert "short-pass" not in run.stdout + run.stderr


def test_weak_login_role_password_is_refused_and_named() -> None:
    strong = {k: "Qm9v-long-random-secret-7731" for k in example_vault("production")}
    run = validate("production", "-e", json.dumps({**strong, "vault_pgmsg_ops_password": "tiny"}))
    assert run.returncode != 0
    assert "Login roles pgmsg_ops need vaulted passwords" in run.stdout
    assert "tiny" not in run.stdout


@pytest.mark.parametrize("environment", SHARED)
def test_strong_secrets_pass_the_checks(environment: str) -> None:
    strong = {k: f"Qm9v-long-random-secret-{i:04d}" for i, k in enumerate(example_vault(environment))}
    run = validate(environment, "-e", json.dumps(strong))
    assert run.returncode == 0, run.stdout[-3000:]


def test_local_inventory_accepts_its_development_passwords() -> None:
    run = validate("local", vault=False)
    assert run.returncode == 0, run.stdout[-3000:]


def group_vars(environment: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "inventory" / environment / "group_vars" / "all" / "main.yml").read_text())


def test_in_transaction_push_is_off_unless_an_inventory_turns_it_on() -> None:
    # pgsql-http follows redirects and cannot be told not to (README): the role's default is off,
    # the shared inventories keep it off, and only the local one (the seed's tests) turns it on.
    defaults = yaml.safe_load((ROOT / "roles" / "messaging_schema" / "defaults" / "main.yml").read_text())
    assert defaults["messaging_schema_in_transaction_push"] is False
    for environment in SHARED:
        assert group_vars(environment).get("messaging_schema_in_transaction_push", False) is False, (
            environment
        )
    assert group_vars("local")["messaging_schema_in_transaction_push"] is True


def inventory_listing(environment: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            str(ANSIBLE_BIN / "ansible-inventory"),
            "-i",
            f"inventory/{environment}/hosts.yml",
            "--list",
            "--vault-password-file",
            str(EXAMPLE_VAULT_PASSWORD),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return json.loads(out)


def group_hosts(listing: dict[str, Any], group: str) -> set[str]:
    """Hosts of a group, through its children."""
    entry = listing.get(group, {})
    hosts = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        hosts |= group_hosts(listing, child)
    return hosts


@pytest.mark.parametrize("environment", SHARED)
def test_shared_inventories_run_a_three_node_cluster_with_tls(environment: str) -> None:
    listing = inventory_listing(environment)
    hostvars = listing["_meta"]["hostvars"]
    db = group_hosts(listing, "messaging_db")
    assert len(db) == 3
    assert group_hosts(listing, "etcd_cluster") == db
    # HAProxy on every host: each client host reaches the leader on its own loopback.
    assert group_hosts(listing, "haproxy") == group_hosts(listing, "docker_hosts")
    for host in group_hosts(listing, "docker_hosts"):
        v = hostvars[host]
        assert v["pgmsg_ha_enabled"] is True and v["pgmsg_tls_enabled"] is True
        assert v["pgmsg_db_host"] == "127.0.0.1"
        assert "0.0.0.0" not in json.dumps({k: val for k, val in v.items() if "listen" in k or "bind" in k})
    for host in db:
        assert "vault_patroni_replication_password" in hostvars[host]["patroni_replication_password"]
        assert "vault_patroni_restapi_password" in hostvars[host]["patroni_restapi_password"]


# Types and choices are checked by Ansible's role argument validation (roles/*/meta/argument_specs.yml),
# before the role's first task: a wrong value stops the deploy with Ansible's own message.
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"postgres_network_mode": "overlay"},
            "value of postgres_network_mode must be one of: host, bridge, got: overlay",
        ),
        (
            {"pgadmin_network_mode": "macvlan"},
            "value of pgadmin_network_mode must be one of: host, bridge, got: macvlan",
        ),
        (
            {"postgres_max_connections": "many"},
            "argument 'postgres_max_connections' is of type str and we were unable to convert to int",
        ),
        ({"pgmsg_tls_source": "letsencrypt"}, "value of pgmsg_tls_source must be one of: ca, inventory"),
        (
            {"pgbackrest_compress_type": "zip"},
            "value of pgbackrest_compress_type must be one of: zst, lz4, gz, bz2, none",
        ),
        (
            {"pgadmin_servers": [{"name": "pgmsg messaging", "port": 5432}]},
            "missing required arguments: host found in pgadmin_servers",
        ),
        (
            {"pgbackrest_jobs": [{"name": "full", "command": "SELECT 1"}]},
            "missing required arguments: schedule found in pgbackrest_jobs",
        ),
        (
            {"pgadmin_servers": [{"name": "db", "host": "db.internal", "sslmode": "maybe"}]},
            "value of sslmode must be one of: disable, allow, prefer, require, verify-ca, verify-full",
        ),
        (
            {"postgres_exporter_restart_policy": "sometimes"},
            "value of postgres_exporter_restart_policy must be one of",
        ),
    ],
)
def test_wrong_type_or_choice_is_refused_by_the_argument_specs(extra: dict[str, str], message: str) -> None:
    run = validate("local", "-e", json.dumps(extra), vault=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Validation of arguments failed" in out
    assert message in out
    # It stops at the validation of the role it concerns: no task of that role ran.
    failed_role = re.search(r"TASK \[(\w+) : Validating arguments[^\n]*\n(?:[^\n]*\n)*?\[ERROR\]", out)
    assert failed_role, out[-3000:]
    assert f"TASK [{failed_role.group(1)} : Ensure" not in out.split(failed_role.group(0))[-1]
