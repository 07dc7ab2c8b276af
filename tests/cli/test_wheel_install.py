"""`pgmsg migrate` from a plain pip install: the wheel carries the SQL.

The wheel is built the way the services image gets it (scripts/build-wheel.sh), installed
with the locked runtime dependencies into a virtualenv of its own, and run, from outside the
repository, against an empty database of the module's scratch server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgmsg import migrations
from tests.support.scratch import ScratchServer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.scratch(migrated=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """bin/ of a fresh virtualenv holding the pgmsg wheel and requirements/runtime.txt only."""
    work = tmp_path_factory.mktemp("wheel")
    wheel = subprocess.run(
        [ROOT / "scripts" / "build-wheel.sh", work / "build"],
        env={**os.environ, "PYTHON": sys.executable},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The interpreter the controller's virtualenv was made from, not the virtualenv itself.
    subprocess.run([sys._base_executable, "-m", "venv", work / "venv"], check=True)
    pip = [work / "venv" / "bin" / "python", "-m", "pip", "--quiet", "--disable-pip-version-check", "install"]
    # psycopg-binary is not a runtime dependency (the image has Debian's libpq5); this machine
    # need not have libpq, so the controller's locked psycopg-binary stands in for it.
    libpq = re.search(
        r"^psycopg-binary==.*?(?=^\S)", (ROOT / "requirements" / "deploy.txt").read_text(), re.M | re.S
    )
    assert libpq, "requirements/deploy.txt has no psycopg-binary"
    (work / "libpq.txt").write_text(libpq.group(0))
    for requirements in (ROOT / "requirements" / "runtime.txt", work / "libpq.txt"):
        subprocess.run([*pip, "--require-hashes", "--only-binary", ":all:", "-r", requirements], check=True)
    subprocess.run([*pip, "--no-deps", "--no-index", wheel], check=True)
    yield work / "venv" / "bin"


def run(bin_dir: Path, *args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    # From outside the repository and without its variables: only the install is importable.
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PGMSG_DSN": dsn}
    return subprocess.run(
        [bin_dir / "pgmsg", *args], cwd=bin_dir, env=env, capture_output=True, text=True, check=False
    )


def test_the_installed_package_reads_its_own_sql(installed: Path) -> None:
    found = subprocess.run(
        [installed / "python", "-c", "from pgmsg import migrations; print(migrations.default_sql_dir())"],
        cwd=installed,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(installed.parent), found
    assert Path(found, "bootstrap.sql").is_file()


def test_migrate_from_the_wheel_applies_every_migration(
    installed: Path, scratch_server: ScratchServer
) -> None:
    expected = [m.name for m in migrations.load()]

    before = run(installed, "migrate", "status", "--json", dsn=scratch_server.dsn)
    assert before.returncode == 0, before.stderr
    assert [(r["name"], r["state"]) for r in json.loads(before.stdout)] == [(n, "pending") for n in expected]

    applied = run(installed, "migrate", "--json", dsn=scratch_server.dsn)
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout) == {"applied": expected}

    after = run(installed, "migrate", "status", "--json", dsn=scratch_server.dsn)
    assert after.returncode == 0, after.stderr
    assert [(r["name"], r["state"]) for r in json.loads(after.stdout)] == [(n, "applied") for n in expected]
