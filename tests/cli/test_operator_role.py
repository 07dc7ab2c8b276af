"""The operator CLI as the operator: every command of the README's table, run as the
pgmsg_ops login (pgmsg_admin), not as the superuser the other CLI tests use.

Administrators may not read signing secrets (017) nor write the allowlist; everything the
CLI table promises an operator must still work for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgmsg import Client
from pgmsg.cli import cli

Run = Callable[..., Result]


@pytest.fixture
def ops(dsn: str, inventory_vars: dict[str, Any]) -> Run:
    [login] = [r for r in inventory_vars["messaging_schema_admins"] if r["name"] == "pgmsg_ops"]
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params.update(user=login["name"], password=login["password"])
    ops_dsn = psycopg.conninfo.make_conninfo(**params)

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(
            cli, list(args), env={"PGMSG_DSN": ops_dsn}, input=input, catch_exceptions=False
        )

    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def test_every_operator_command_works_for_an_administrator(ops: Run, client: Client, run_id: str) -> None:
    consumer = run_id + "-ops"
    added = json.loads(
        ok(ops("--json", "subscriptions", "add", consumer, "--mode", "async", "--type", run_id + ".*")).stdout
    )
    assert added["client_id"] == consumer
    ok(ops("subscriptions", "list", "--client", consumer))
    published = int(ok(ops("publish", run_id + ".e", '{"n": 1}')).stdout.strip())
    deferred = ok(ops("--json", "publish", run_id + ".e", '{"n": 2}', "--deferred"))
    assert json.loads(deferred.stdout)["deferred"] is True
    ok(ops("deferred", "status"))
    ok(ops("deferred", "fan-out"))
    ok(ops("deferred", "failed"))
    ok(ops("subscriptions", "pause", consumer))
    ok(ops("subscriptions", "resume", consumer))
    listed = json.loads(ok(ops("--json", "deliveries", "list", "--client", consumer)).stdout)
    assert published in [d["message_id"] for d in listed]
    ok(ops("deliveries", "stats", "--client", consumer))
    ok(ops("dead-letters", "list"))
    ok(ops("dead-letters", "redrive", "--client", consumer, "--yes"))
    ok(ops("replay", consumer, "--from-id", str(published), "--yes"))
    ok(ops("retry", "--yes"))
    ok(ops("archive", "--older-than", "30d"))
    ok(ops("purge", "--older-than", "7d", "--yes"))
    assert ops("health").exit_code in (0, 1, 2)  # runs; the verdict is the database's state
    ok(ops("migrate", "status"))
    ok(ops("subscriptions", "remove", consumer, "--yes"))
