"""Backups and point-in-time restore of the single node, with real pgBackRest and real restores.

Everything runs against ``backup_node`` (tests/ha/conftest.py): a deployment of the test's own,
made from the local inventory, so the drill can stop and rewrite its database. The drill: take a
backup, publish A (and deliver it), note the time T on the database's clock, publish B; restore
the latest state (A and B), restore to T (A with its delivery, no B), then go back to the
timeline before that restore (A and B again), each time through playbooks/restore.yml.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import psycopg
import pytest
import testinfra
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row

from pgmsg import Client, migrations
from pgmsg.cli import cli
from tests.support.backup import ROOT, BackupNode
from tests.support.scratch import deployed_image, scratch_postgres
from tests.support.waiting import wait_until

ROLE_DEFAULTS = yaml.safe_load((ROOT / "roles" / "pgbackrest" / "defaults" / "main.yml").read_text())
#: Login roles of every pgmsg group but the superuser: none may start a backup.
NON_SUPERUSERS = [
    "messaging_schema_admins",
    "messaging_schema_monitors",
    "messaging_schema_clients",
    "messaging_schema_publishers",
    "messaging_schema_dispatchers",
]


def setting(node: BackupNode, name: str) -> Any:
    """A pgbackrest role variable as the deployment has it: the inventory's, else the role's default."""
    return node.variables.get(name, ROLE_DEFAULTS[name])


@pytest.fixture
def db(backup_node: BackupNode) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(backup_node.dsn(), autocommit=True, row_factory=dict_row) as conn:
        yield conn


def wait_for_run(node: BackupNode, run_id: int, timeout: float = 300) -> dict[str, Any]:
    """The pgmsg_backup_runs row of run_id once the run recorded its outcome."""

    def finished() -> dict[str, Any] | None:
        with psycopg.connect(node.dsn(), autocommit=True, row_factory=dict_row) as conn:
            return conn.execute(
                "SELECT * FROM pgmsg_backup_runs WHERE id = %s AND finished_at IS NOT NULL", (run_id,)
            ).fetchone()

    return wait_until(
        finished, timeout=timeout, interval=0.5, message=f"backup run {run_id} recorded its outcome"
    )


def started_at(node: BackupNode) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.State.StartedAt}}", node.container],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


# -- the deployment -------------------------------------------------------------------------------


def test_second_deploy_changes_nothing(backup_node: BackupNode) -> None:
    run = backup_node.deploy()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    recap = re.findall(
        r"^\S+\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", run.stdout, re.MULTILINE
    )
    changed_tasks = re.findall(r"^TASK \[(.+?)\].*\n(?:.*\n)*?changed:", run.stdout, re.MULTILINE)
    assert recap and all(changed == "0" for changed in recap), (recap, changed_tasks)


def test_pgbackrest_info_shows_the_stanza_with_a_first_full_backup(
    backup_node: BackupNode, db: psycopg.Connection[Any]
) -> None:
    host = testinfra.get_host(f"docker://postgres@{backup_node.container}")
    [info] = json.loads(host.check_output(f"pgbackrest --stanza={backup_node.stanza} --output=json info"))
    assert info["name"] == backup_node.stanza
    assert info["status"]["code"] == 0, info["status"]
    assert [repo["status"]["code"] for repo in info["repo"]] == [0]
    assert info["cipher"] == (
        "aes-256-cbc" if setting(backup_node, "pgbackrest_repo_cipher_pass") else "none"
    )
    system = db.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    assert [d["system-id"] for d in info["db"]] == [system["system_identifier"]]
    assert info["backup"][0]["type"] == "full"
    assert info["archive"][0]["min"] and info["archive"][0]["max"]
    # The deploy's first full backup and check went through pgmsg_backup_start and were recorded.
    recorded = db.execute("SELECT kind, label FROM pgmsg_backup_runs WHERE ok ORDER BY id").fetchall()
    assert {"kind": "full", "label": info["backup"][0]["label"]} in recorded
    assert any(r["kind"] == "check" for r in recorded)


def test_configuration_is_mounted_for_postgres_only(backup_node: BackupNode) -> None:
    host = testinfra.get_host(f"docker://postgres@{backup_node.container}")
    config = host.file("/etc/pgbackrest/pgbackrest.conf")
    assert config.user == "postgres" and config.mode == 0o600
    text = config.content_string
    for line in (
        f"[{backup_node.stanza}]",
        f"repo1-type={setting(backup_node, 'pgbackrest_repo_type')}",
        f"repo1-retention-full={setting(backup_node, 'pgbackrest_retention_full')}",
        f"repo1-retention-diff={setting(backup_node, 'pgbackrest_retention_diff')}",
        f"compress-type={setting(backup_node, 'pgbackrest_compress_type')}",
        f"process-max={setting(backup_node, 'pgbackrest_process_max')}",
    ):
        assert line in text.splitlines(), line
    inspect = json.loads(
        subprocess.run(
            ["docker", "inspect", backup_node.container], check=True, capture_output=True, text=True
        ).stdout
    )[0]
    mounts = {m["Destination"]: m for m in inspect["Mounts"]}
    assert mounts["/etc/pgbackrest/pgbackrest.conf"]["RW"] is False
    assert mounts["/var/lib/pgbackrest"]["Name"] == setting(backup_node, "pgbackrest_repo_volume")


def test_container_runs_under_dockers_init(backup_node: BackupNode) -> None:
    """A detached backup run's shell is reparented to PID 1: docker's init reaps it, where the
    postmaster as PID 1 would take an orphan killed by a signal for a crashed backend."""
    host = testinfra.get_host(f"docker://postgres@{backup_node.container}")
    assert host.file("/proc/1/comm").content_string.strip() == "docker-init"
    # ... with the entrypoint, and so PostgreSQL, below it.
    assert host.file("/proc/1/cmdline").content_string.split("\0")[:3] == [
        "/sbin/docker-init",
        "--",
        "/usr/local/bin/entrypoint.sh",
    ]


def test_archive_command_puts_every_wal_segment_into_the_repository(
    backup_node: BackupNode, db: psycopg.Connection[Any]
) -> None:
    settings = {
        r["name"]: r["setting"]
        for r in db.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('archive_mode', 'archive_command', 'archive_timeout')"
        )
    }
    assert settings == {
        "archive_mode": "on",
        "archive_command": f"pgbackrest --stanza={backup_node.stanza} archive-push %p",
        "archive_timeout": str(setting(backup_node, "pgbackrest_archive_timeout")),
    }
    before = db.execute("SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
    db.execute("CREATE TEMP TABLE wal_probe AS SELECT generate_series(1, 1000) AS n")  # something to archive
    segment = db.execute("SELECT pg_walfile_name(pg_switch_wal()) AS name").fetchone()["name"]
    after = wait_until(
        lambda: db.execute(
            "SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver "
            "WHERE last_archived_wal >= %s",
            (segment,),
        ).fetchone(),
        timeout=60,
        message=f"{segment} archived",
    )
    assert after["archived_count"] > before["archived_count"]
    assert after["failed_count"] == before["failed_count"]
    listing = backup_node.pgbackrest("--recurse", "--output=json", "repo-ls", f"archive/{backup_node.stanza}")
    assert any(name.split("/")[-1].startswith(segment) for name in json.loads(listing)), segment


# -- scheduled runs -------------------------------------------------------------------------------


def test_backup_jobs_are_scheduled_in_pg_cron(backup_node: BackupNode, db: psycopg.Connection[Any]) -> None:
    jobs = {
        r["jobname"]: r
        for r in db.execute(
            "SELECT jobname, schedule, command, username, active FROM cron.job WHERE jobname LIKE 'pgbackrest-%'"
        )
    }
    expected = {
        f"{setting(backup_node, 'pgbackrest_job_prefix')}{kind}": setting(
            backup_node, f"pgbackrest_{kind}_schedule"
        )
        for kind in ("full", "diff", "check")
    }
    assert {name: job["schedule"] for name, job in jobs.items()} == expected
    for kind in ("full", "diff", "check"):
        job = jobs[f"pgbackrest-{kind}"]
        assert job["command"] == f"SELECT pgmsg_backup_start('{kind}', '{backup_node.stanza}')"
        assert job["username"] == "postgres" and job["active"]


def test_pg_cron_runs_the_check_job(backup_node: BackupNode, db: psycopg.Connection[Any]) -> None:
    """The hourly check, run by pg_cron itself every 2 seconds for a moment."""
    job = db.execute("SELECT jobid, schedule FROM cron.job WHERE jobname = 'pgbackrest-check'").fetchone()
    last = db.execute("SELECT coalesce(max(id), 0) AS id FROM pgmsg_backup_runs").fetchone()["id"]
    db.execute("SELECT cron.alter_job(%s, schedule => '2 seconds')", (job["jobid"],))
    try:
        run = wait_until(
            lambda: db.execute(
                "SELECT * FROM pgmsg_backup_runs WHERE id > %s AND kind = 'check' AND finished_at IS NOT NULL "
                "ORDER BY id LIMIT 1",
                (last,),
            ).fetchone(),
            timeout=60,
            message="pg_cron ran pgbackrest check",
        )
    finally:
        db.execute("SELECT cron.alter_job(%s, schedule => %s)", (job["jobid"], job["schedule"]))
    assert run["ok"], run["error"]
    assert run["stanza"] == backup_node.stanza and run["error"] is None


def test_backup_job_takes_a_backup_without_holding_a_transaction(
    backup_node: BackupNode, db: psycopg.Connection[Any]
) -> None:
    command = db.execute("SELECT command FROM cron.job WHERE jobname = 'pgbackrest-diff'").fetchone()[
        "command"
    ]
    began = time.monotonic()
    run_id = db.execute(command).fetchone()["pgmsg_backup_start"]
    returned_after = time.monotonic() - began
    # The job's transaction ends at once; the run goes on alone and records itself.
    assert returned_after < 1.0
    assert db.execute("SELECT ok FROM pgmsg_backup_runs WHERE id = %s", (run_id,)).fetchone()["ok"] is None
    run = wait_for_run(backup_node, run_id)
    assert run["ok"], run["error"]
    assert (run["finished_at"] - run["started_at"]).total_seconds() > returned_after
    backups = {b["label"]: b for b in backup_node.info()["backup"]}
    assert run["label"] in backups and backups[run["label"]]["type"] == "diff"
    assert backups[run["label"]]["prior"] in backups


@pytest.mark.parametrize("inventory_key", NON_SUPERUSERS)
def test_only_the_superuser_may_start_a_backup(
    backup_node: BackupNode, db: psycopg.Connection[Any], inventory_key: str
) -> None:
    runs = db.execute("SELECT count(*) AS n FROM pgmsg_backup_runs").fetchone()["n"]
    user, password = backup_node.login(inventory_key)
    with psycopg.connect(backup_node.dsn(user, password), autocommit=True) as conn:
        for kind in ("full", "check"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT pgmsg_backup_start(%s)", (kind,))
    assert db.execute("SELECT count(*) AS n FROM pgmsg_backup_runs").fetchone()["n"] == runs


def test_monitoring_and_operators_read_the_outcome_clients_do_not(backup_node: BackupNode) -> None:
    for key in ("messaging_schema_monitors", "messaging_schema_admins"):
        with psycopg.connect(backup_node.dsn(*backup_node.login(key)), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pgmsg_backup_status").fetchone() == (4,)
            assert conn.execute("SELECT count(*) > 0 FROM pgmsg_backup_runs WHERE ok").fetchone() == (True,)
    with psycopg.connect(
        backup_node.dsn(*backup_node.login("messaging_schema_clients")), autocommit=True
    ) as conn:
        for relation in ("pgmsg_backup_status", "pgmsg_backup_runs"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {relation}")


# -- reporting ------------------------------------------------------------------------------------


def test_health_reports_the_last_good_backup_and_check(backup_node: BackupNode) -> None:
    dsn = backup_node.dsn(*backup_node.login("messaging_schema_admins"))

    def health(*args: str) -> tuple[int, dict[str, dict[str, str]]]:
        result = CliRunner().invoke(
            cli,
            ["health", "--check", "backups", "--json", *args],
            env={"PGMSG_DSN": dsn},
            catch_exceptions=False,
        )
        return result.exit_code, {c["name"]: c for c in json.loads(result.stdout)["checks"]}

    code, checks = health()
    assert code == 0, checks
    assert checks["backup"]["status"] == "ok" and "last good backup" in checks["backup"]["detail"]
    assert (
        checks["backup-check"]["status"] == "ok"
        and "pgbackrest check passed" in checks["backup-check"]["detail"]
    )
    code, checks = health("--max-backup-age", "0")
    assert code == 1 and checks["backup"]["status"] == "warning"
    code, checks = health("--max-backup-age", "0", "--critical-backup-age", "0")
    assert code == 2 and checks["backup"]["status"] == "critical"
    code, checks = health("--max-backup-check-age", "0")
    assert code == 1 and checks["backup-check"]["status"] == "warning"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k == "type"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("pgmsg_backup")
    }


def test_exporter_reports_backup_age_and_check(backup_node: BackupNode) -> None:
    port = int(backup_node.variables["postgres_exporter_sql_port"])
    samples = wait_until(
        lambda: (s := scrape(port)) and ("pgmsg_backup_last_check_ok", ()) in s and s,
        timeout=60,
        message="the exporter reports the backup metrics",
    )
    full_age = samples[("pgmsg_backup_last_success_age_seconds", (("type", "full"),))]
    assert 0 < full_age < 3600
    assert samples[("pgmsg_backup_last_check_ok", ())] == 1
    assert 0 < samples[("pgmsg_backup_last_check_age_seconds", ())] < 3600


# -- restore --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        ({"restore_target": "2000-01-01 00:00:00+00"}, "the repository reaches back to"),
        ({"restore_target": "2999-01-01 00:00:00+00"}, "a target must lie between then and now"),
        ({"restore_target": "yesterday"}, "is not a time with its UTC"),
        ({"pgbackrest_stanza": "no-such-stanza"}, "the repository holds no backup of stanza no-such-stanza"),
    ],
)
def test_restore_refuses_and_changes_nothing(
    backup_node: BackupNode, extra: dict[str, str], refusal: str
) -> None:
    before = started_at(backup_node)
    run = backup_node.playbook("playbooks/restore.yml", "-e", json.dumps(extra))
    assert run.returncode != 0
    assert refusal in " ".join(run.stdout.split()), run.stdout[-3000:]
    assert started_at(backup_node) == before  # never stopped


def restore(node: BackupNode, **extra: str) -> str:
    """Run playbooks/restore.yml; its report line."""
    run = node.playbook("playbooks/restore.yml", *(["-e", json.dumps(extra)] if extra else []))
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    report = " ".join(run.stdout.split())
    assert "Restored stanza" in report, report[-2000:]
    return report


def state(node: BackupNode, tag: str) -> dict[str, Any]:
    """The test's messages (by payload name) with their deliveries, and the timeline."""
    with psycopg.connect(node.dsn(), autocommit=True, row_factory=dict_row) as conn:
        messages = conn.execute(
            "SELECT m.payload->>'name' AS name, m.id, "
            "       json_agg(json_build_object('id', d.id, 'status', d.status, 'attempts', d.attempts, "
            "                                  'delivered_at', d.delivered_at) ORDER BY d.id) AS deliveries "
            "  FROM messages m JOIN message_delivery d ON d.message_id = m.id "
            " WHERE m.message_type LIKE %s GROUP BY m.id ORDER BY m.id",
            (tag + ".%",),
        ).fetchall()
        timeline = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()["timeline_id"]
        writable = conn.execute("SELECT NOT pg_is_in_recovery() AS yes").fetchone()["yes"]
    return {"messages": {m["name"]: m for m in messages}, "timeline": timeline, "writable": writable}


def test_restore_drill(backup_node: BackupNode) -> None:
    tag = "t" + uuid.uuid4().hex[:10]
    client_id = tag + "-drill"
    with psycopg.connect(backup_node.dsn(), autocommit=True, row_factory=dict_row) as conn:
        # A backup first (incremental, on top of the deploy's full and the job's differential).
        run = wait_for_run(
            backup_node, conn.execute("SELECT pgmsg_backup_start('incr') AS id").fetchone()["id"]
        )
        assert run["ok"], run["error"]
    with Client(backup_node.dsn(), max_size=2) as client:
        client.subscribe(client_id, "async", message_type=tag + ".*")
        client.publish(tag + ".event", {"name": "A"})
        [delivery] = client.claim(client_id, 10)
        assert client.ack([delivery]) == 1
        with psycopg.connect(backup_node.dsn(), autocommit=True) as conn:
            point = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        client.publish(tag + ".event", {"name": "B"})
    target = point.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    original = state(backup_node, tag)
    assert set(original["messages"]) == {"A", "B"}
    assert [d["status"] for d in original["messages"]["A"]["deliveries"]] == ["delivered"]

    # A lost disk: the latest state comes back, both messages with their deliveries as they were.
    restore(backup_node)
    latest = state(backup_node, tag)
    assert latest["messages"] == original["messages"] and latest["writable"]
    assert latest["timeline"] == original["timeline"] + 1

    # A mistake after T: back to T, where A was published and delivered and B not yet.
    report = restore(backup_node, restore_target=target)
    at_t = state(backup_node, tag)
    assert set(at_t["messages"]) == {"A"} and at_t["writable"]
    assert at_t["messages"]["A"] == original["messages"]["A"]
    assert f"-e restore_timeline={latest['timeline']}" in report

    # Changed one's mind: the timeline before that restore, with both messages again.
    restore(backup_node, restore_timeline=str(latest["timeline"]))
    again = state(backup_node, tag)
    assert again["messages"] == original["messages"] and again["writable"]
    assert again["timeline"] > at_t["timeline"]
    # Archiving goes on from the new timeline: pgbackrest check passes on it.
    with psycopg.connect(backup_node.dsn(), autocommit=True, row_factory=dict_row) as conn:
        run = wait_for_run(
            backup_node, conn.execute("SELECT pgmsg_backup_start('check') AS id").fetchone()["id"]
        )
    assert run["ok"], run["error"]


def test_health_warns_without_backups_and_is_critical_when_runs_fail(backup_node: BackupNode) -> None:
    """A server of the same image with no pgBackRest configuration: nothing recorded is a warning;
    runs that really fail (pgbackrest finds no stanza) are critical, with pgBackRest's words. The
    scratch server runs without docker's init, and the failed runs still restart nothing: the
    detached script always exits 0 itself."""
    image = deployed_image(backup_node.container)

    def health(dsn: str) -> tuple[int, dict[str, dict[str, str]]]:
        result = CliRunner().invoke(
            cli, ["health", "--check", "backups", "--json"], env={"PGMSG_DSN": dsn}, catch_exceptions=False
        )
        return result.exit_code, {c["name"]: c for c in json.loads(result.stdout)["checks"]}

    with scratch_postgres(image, "pgmsg-bk-test-unconfigured", 25612) as dsn:
        migrations.apply(dsn)
        code, checks = health(dsn)
        assert code == 1
        assert (
            checks["backup"]["status"] == "warning"
            and "no backup has been recorded" in checks["backup"]["detail"]
        )
        assert checks["backup-check"]["status"] == "warning"
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
            started = conn.execute("SELECT pg_postmaster_start_time() AS t").fetchone()["t"]
            ids = [
                conn.execute("SELECT pgmsg_backup_start(%s) AS id", (kind,)).fetchone()["id"]
                for kind in ("full", "check")
            ]
            runs = [
                wait_until(
                    lambda i=i: conn.execute(  # type: ignore[misc]
                        "SELECT * FROM pgmsg_backup_runs WHERE id = %s AND finished_at IS NOT NULL", (i,)
                    ).fetchone(),
                    timeout=60,
                    message=f"run {i} recorded",
                )
                for i in ids
            ]
            assert [r["ok"] for r in runs] == [False, False]
            assert all(r["error"].startswith("pgbackrest exited with") for r in runs), runs
            assert conn.execute("SELECT pg_postmaster_start_time() AS t").fetchone()["t"] == started
        code, checks = health(dsn)
        assert code == 2
        assert checks["backup"]["status"] == "critical"
        assert "no backup has succeeded; the last full backup failed" in checks["backup"]["detail"]
        assert checks["backup-check"]["status"] == "critical"
        assert "pgbackrest check failed" in checks["backup-check"]["detail"]
