"""Fixtures of tests/ha.

The cluster (tests/support/cluster.py): ``cluster`` is the deployed cluster of the inventory under
test (PGMSG_TEST_INVENTORY), every member, etcd member and HAProxy running before and after each
test, whatever an earlier one stopped.

Backups (roles/pgbackrest, playbooks/restore.yml): ``backup_node`` is a single-node deployment
of the tests' own (tests/support/backup.py): a restore drill stops and rewrites a database,
which the shared deployment must never see.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.support.backup import BackupNode, backup_node_inventory, remove_backup_node
from tests.support.cluster import Cluster, inventory_under_test


@pytest.fixture(scope="session")
def backup_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackupNode]:
    """A single node with backups on (deployed like inventory/local, under pgmsg-bk-test-* names on
    127.0.0.1:25610, exporter on 25611): its deploy created the stanza, ran a first pgbackrest check
    and took a first full backup. Removed, volumes and all, afterwards."""
    inventory = backup_node_inventory(tmp_path_factory.mktemp("backup-node"))
    variables = yaml.safe_load((inventory.parent / "group_vars" / "all" / "main.yml").read_text())
    remove_backup_node(variables)
    node = BackupNode(inventory, variables)
    try:
        deployed = node.deploy()
        assert deployed.returncode == 0, deployed.stdout[-5000:] + deployed.stderr[-3000:]
        yield node
    finally:
        remove_backup_node(variables)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster(inventory_under_test())
    c.start_all()
    yield c
    c.start_all()
