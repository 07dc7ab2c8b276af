"""pgmsg health: exit 0 ok, 1 warning, 2 critical, 3 unknown (monitoring-plugins), under
conditions made here.

Other deliveries may exist in the shared database, so the client-scoped checks
are run with --client, and the others are asserted only where this deployment
makes them deterministic."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from click.testing import CliRunner, Result

from pgmsg import Client
from pgmsg.cli import cli
from tests.support.waiting import wait_until

Run = Callable[..., Result]


def checks(result: Result) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_full_report_has_a_line_per_check(run: Run) -> None:
    result = run("health")
    assert result.exit_code in (0, 1, 2), result.output
    lines = result.output.splitlines()
    assert lines[-1] == f"overall: {['ok', 'warning', 'critical'][result.exit_code]}"
    names = [line.split()[1] for line in lines[:-1]]
    assert {"extensions", "dispatcher", "dead-letters", "idle-in-transaction", "oldest-transaction"} <= set(
        names
    )
    # Deployed by the housekeeping role, with the extensions from migration 001.
    assert any(
        line.startswith("ok       extensions") and "http" in line and "pg_cron" in line for line in lines
    )
    assert "pgmsg-release-expired-leases" in result.output
    as_json = json.loads(run("health", "--json").stdout)
    assert as_json["status"] in ("ok", "warning", "critical")
    assert {c["status"] for c in as_json["checks"]} <= {"ok", "warning", "critical"}  # all could run


def test_ok_for_a_healthy_client(run: Run, client: Client, run_id: str) -> None:
    client.subscribe(run_id + "-h", "async", message_type=run_id + ".*")
    result = run(
        "health",
        "--client",
        run_id + "-h",
        "--check",
        "pending",
        "--check",
        "dead-letters",
        "--check",
        "dispatcher",
        "--check",
        "extensions",
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "overall: ok"
    assert "no active dispatcher-mode http subscription" in result.output


def test_old_pending_delivery_warns_then_is_critical(
    run: Run, client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    client.subscribe(run_id + "-slow", "async", message_type=run_id + ".*")
    message_id = client.publish(run_id + ".e", {})
    db.execute(
        "UPDATE message_delivery SET created_at = now() - interval '2 hours' WHERE message_id = %s",
        (message_id,),
    )
    base = ("health", "--client", run_id + "-slow", "--check", "pending")

    relaxed = run(*base, "--max-pending-age", "10800", "--critical-pending-age", "21600")
    assert relaxed.exit_code == 0, relaxed.output

    warning = run(*base, "--max-pending-age", "3600", "--critical-pending-age", "10800")
    assert warning.exit_code == 1, warning.output
    assert warning.output.startswith(f"warning  pending {run_id}-slow") and "1 waiting" in warning.output

    critical = run(*base, "--max-pending-age", "600", "--critical-pending-age", "3600", "--json")
    assert critical.exit_code == 2
    check = checks(critical)[f"pending {run_id}-slow"]
    assert check["status"] == "critical" and "oldest 2h00m old" in check["detail"]


def test_dead_letters_warn(run: Run, client: Client, db: psycopg.Connection[Any], run_id: str) -> None:
    client.subscribe(run_id + "-dead", "async", message_type=run_id + ".*")
    client.publish(run_id + ".e", {})
    db.execute(
        "UPDATE message_delivery SET status = 'dead', dead_at = now() WHERE client_id = %s",
        (run_id + "-dead",),
    )
    result = run("health", "--client", run_id + "-dead", "--check", "dead-letters", "--check", "pending")
    assert result.exit_code == 1
    assert f"1 dead letter(s) ({run_id}-dead: 1)" in result.output


def test_dispatcher_heartbeat(run: Run, client: Client, run_id: str) -> None:
    client.subscribe(
        run_id + "-push", "http", message_type=run_id + ".*", webhook_url="http://127.0.0.1:9/hook"
    )
    base = ("health", "--client", run_id + "-push", "--check", "dispatcher", "--json")
    # The deployed dispatcher reports in every few seconds: fresh within an hour...
    fresh = run(*base, "--heartbeat-age", "3600")
    assert fresh.exit_code == 0, fresh.output
    assert "alive" in checks(fresh)["dispatcher"]["detail"]
    # ...and, with no tolerance at all, stale.
    stale = run(*base, "--heartbeat-age", "0")
    assert stale.exit_code == 1
    assert "are not pushed" in checks(stale)["dispatcher"]["detail"]


def test_idle_in_transaction_session_warns(run: Run, dsn: str) -> None:
    with psycopg.connect(dsn) as idle:
        idle.execute("SELECT 1")  # opens a transaction and leaves it open
        pid = idle.info.backend_pid
        with psycopg.connect(dsn, autocommit=True) as watcher:
            wait_until(
                lambda: watcher.execute(
                    "SELECT now() - state_change > interval '1 second' FROM pg_stat_activity WHERE pid = %s",
                    (pid,),
                ).fetchone()[0],
                timeout=10,
            )
        result = run(
            "health",
            "--check",
            "transactions",
            "--idle-transaction-age",
            "1",
            "--max-transaction-age",
            "0.5",
            "--json",
        )
        idle.rollback()
    assert result.exit_code == 1
    found = checks(result)
    assert found["idle-in-transaction"]["status"] == "warning"
    assert str(pid) in found["idle-in-transaction"]["detail"]
    assert found["oldest-transaction"]["status"] == "warning"


def test_usage_errors_are_unknown_not_critical(run: Run) -> None:
    """Monitoring reads 2 as CRITICAL: a typo in a check's command line must say UNKNOWN (3)."""
    result = run("health", "--max-pending-age", "600", "--critical-pending-age", "60")
    assert result.exit_code == 3 and "must not be lower than --max-pending-age" in result.output
    assert run("health", "--check", "everything").exit_code == 3
    assert run("health", "--max-pending-age", "soon").exit_code == 3
    bad_option = run("health", "--no-such-option", "--json")
    assert bad_option.exit_code == 3 and "No such option" in bad_option.stderr
    assert json.loads(bad_option.stdout)["error"] == {
        "kind": "usage",
        "message": "No such option '--no-such-option'.",
        "hint": "see pgmsg health --help",
    }
    # Other commands keep click's usage code 2.
    assert run("deliveries", "list", "--no-such-option").exit_code == 2


def test_unreachable_database_exits_3(run: Run) -> None:
    result = CliRunner().invoke(cli, ["--dsn", "host=127.0.0.1 port=1 dbname=x connect_timeout=2", "health"])
    assert result.exit_code == 3
    assert "cannot connect to the messaging database" in result.output
    assert "Traceback" not in result.output
    as_json = CliRunner().invoke(
        cli, ["--dsn", "host=127.0.0.1 port=1 dbname=x connect_timeout=2", "health", "--json"]
    )
    assert as_json.exit_code == 3
    error = json.loads(as_json.stdout)["error"]
    assert error["kind"] == "unreachable" and "Connection refused" in error["message"]
    assert "PGMSG_DSN" in error["hint"]
    malformed = CliRunner().invoke(cli, ["--dsn", "host=127.0.0.1 port", "health"])
    assert malformed.exit_code == 3 and "invalid connection string" in malformed.stderr


def test_database_error_during_checks_is_unknown(
    run: Run, dsn: str, db: psycopg.Connection[Any], run_id: str
) -> None:
    """A login that may not read what the checks read gets no verdict: 3, not a false ok."""
    login = f"pgmsg_nobody_{run_id}".replace("-", "_")[:60]
    db.execute(f"CREATE ROLE \"{login}\" LOGIN PASSWORD 'nobody-pass-1234'")
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        params.update(user=login, password="nobody-pass-1234")
        result = CliRunner().invoke(
            cli, ["--dsn", psycopg.conninfo.make_conninfo(**params), "health", "--check", "pending", "--json"]
        )
        assert result.exit_code == 3, result.output
        report = json.loads(result.stdout)
        assert report["status"] == "unknown"
        assert report["checks"][0]["status"] == "unknown"
        assert "could not check" in report["checks"][0]["detail"]
    finally:
        db.execute(f'DROP ROLE "{login}"')


def test_help_documents_every_exit_code(run: Run) -> None:
    text = run("health", "--help").output
    for line in ("0  ok", "1  warning", "2  critical", "3  unknown"):
        assert line in text, line
    assert "unreachable" in text and "usage error" in text


def test_cluster_check_on_a_single_node(run: Run, inventory_vars: dict[str, Any]) -> None:
    result = run("health", "--check", "cluster", "--json")
    assert result.exit_code == 0, result.output
    found = checks(result)
    if inventory_vars.get("pgmsg_ha_enabled"):
        assert found["cluster"]["detail"].startswith("leader postgres-messaging-"), found
        return
    assert set(found) == {"cluster"}
    assert found["cluster"]["status"] == "ok"
    assert found["cluster"]["detail"].startswith("single node, timeline "), found


def test_backups_report_the_last_good_backup_and_check(run: Run, inventory_vars: dict[str, Any]) -> None:
    """With backups on (pgbackrest_enabled, as in the local inventory) the deploy ran pgbackrest
    check and took a full backup, and pg_cron keeps both going (roles/pgbackrest)."""
    base = ("health", "--check", "backups", "--json", "--max-backup-check-age", "1e9")
    if not inventory_vars.get("pgbackrest_enabled", False):
        off = run(*base)
        assert off.exit_code == 1 and "no backup has been recorded" in checks(off)["backup"]["detail"]
        return
    relaxed = run(*base, "--max-backup-age", "1e9", "--critical-backup-age", "1e9")
    assert relaxed.exit_code == 0, relaxed.output
    found = checks(relaxed)
    assert found["backup"]["detail"].startswith("last good backup ")
    assert found["backup-check"]["detail"].startswith("pgbackrest check passed ")
    warning = run(*base, "--max-backup-age", "0", "--critical-backup-age", "1e9")
    assert warning.exit_code == 1 and checks(warning)["backup"]["status"] == "warning"
    critical = run(*base, "--max-backup-age", "0", "--critical-backup-age", "0")
    assert critical.exit_code == 2 and checks(critical)["backup"]["status"] == "critical"
    assert "over 0ms" in checks(critical)["backup"]["detail"]
    refused = run("health", "--max-backup-age", "600", "--critical-backup-age", "60")
    assert refused.exit_code == 3 and "must not be lower than --max-backup-age" in refused.output
