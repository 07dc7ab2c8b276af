"""Fixtures the testinfra modules share: the host's inventory variables and psql in the
deployed database container. Names (containers, database, ports) come from the ``deployment``
fixture of tests/conftest.py, never typed here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.deployment import Deployment


@pytest.fixture(scope="module")
def hostvars(host: Any) -> dict[str, Any]:
    """The variables of the host under test, as testinfra's Ansible backend sees them."""
    return dict(host.ansible.get_variables())


@pytest.fixture(scope="module")
def psql(host: Any, deployment: Deployment) -> Callable[[str], str]:
    """``psql(query)``: the unaligned output of ``query``, run as the superuser inside the
    deployed database container (the seed's ``docker exec`` way in)."""

    def run(query: str) -> str:
        cmd = host.run(
            "docker exec %s psql -U postgres -d %s -At -c %s",
            deployment.db_container,
            deployment.db_name,
            query,
        )
        assert cmd.rc == 0, cmd.stderr
        return str(cmd.stdout).strip()

    return run
