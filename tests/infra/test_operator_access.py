"""testinfra: the operator's connection the deploy writes on the database host (role
operator_access): root's libpq service file and pgpass, used by ``pgmsg`` with no DSN set,
and closed to every other local user."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PGMSG = Path(sys.executable).parent / "pgmsg"
SERVICE_FILE = "/root/.pg_service.conf"
PGPASS = "/root/.pgpass"


@pytest.mark.parametrize("path", [SERVICE_FILE, PGPASS])
def test_files_are_root_only(host, path: str) -> None:  # type: ignore[no-untyped-def]
    secret = host.file(path)
    assert secret.is_file and secret.user == "root" and secret.group == "root"
    assert secret.mode == 0o600


def test_service_names_the_admin_login_and_the_write_endpoint(host, hostvars, deployment) -> None:  # type: ignore[no-untyped-def]
    admin = hostvars["messaging_schema_admins"][0]
    service = host.file(SERVICE_FILE).content_string
    block = service.split("[pgmsg]\n", 1)[1].split("# END", 1)[0]
    settings = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
    assert settings["user"] == admin["name"]
    # The single node, or HAProxy's leader port in a cluster: where the inventory's clients write.
    assert (settings["host"], int(settings["port"]), settings["dbname"]) == (
        deployment.db_host,
        deployment.db_port,
        deployment.db_name,
    )
    assert ("sslmode" in settings) == bool(hostvars.get("pgmsg_tls_enabled"))
    entry = f"{settings['host']}:{settings['port']}:{settings['dbname']}:{admin['name']}:"
    assert f"{entry}{admin['password']}" in host.file(PGPASS).content_string.splitlines()
    assert admin["password"] not in service


def clean_run(*args: str) -> subprocess.CompletedProcess[str]:
    """``pgmsg ARGS`` as root from a login-like environment: no PGMSG_DSN, no PG* variable."""
    return subprocess.run(
        [str(PGMSG), *args],
        env={"HOME": "/root", "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pgmsg_health_works_with_no_dsn_given() -> None:
    result = clean_run("health", "--json")
    assert result.returncode in (0, 1, 2), result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] in ("ok", "warning", "critical")
    assert any(c["name"] == "extensions" and c["status"] == "ok" for c in report["checks"])


def test_cli_connects_as_the_admin_login_not_the_superuser(hostvars) -> None:  # type: ignore[no-untyped-def]
    """The connection the CLI picks with nothing set is the admin login (least privilege)."""
    who = clean_run_python(
        "import psycopg; from pgmsg.config import operator_conninfo; "
        "conninfo = operator_conninfo(); print(conninfo); "
        "print(psycopg.connect(conninfo).execute('SELECT current_user').fetchone()[0])"
    )
    assert who.returncode == 0, who.stderr
    assert who.stdout.split() == ["service=pgmsg", hostvars["messaging_schema_admins"][0]["name"]]
    assert clean_run("--json", "subscriptions", "list").returncode == 0


def clean_run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"HOME": "/root", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_the_service_file_there_is_no_default_connection(tmp_path: Path) -> None:
    """Another account (its own HOME) gets nothing from root's files: a clear unreachable error."""
    result = subprocess.run(
        [str(PGMSG), "health", "--json"],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PGHOST": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"]["kind"] == "unreachable"


@pytest.mark.parametrize("path", [SERVICE_FILE, PGPASS])
def test_another_local_user_cannot_read_them(host, path: str) -> None:  # type: ignore[no-untyped-def]
    """The attacker's side: ``nobody`` on the same host is refused by the kernel."""
    attempt = host.run("runuser -u nobody -- cat %s", path)
    assert attempt.rc != 0 and "Permission denied" in attempt.stderr
