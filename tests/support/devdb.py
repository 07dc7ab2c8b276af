"""A private copy of the deployed database for one developer's work in progress.

    python -m tests.support.devdb up --port 25501 [--sql-dir path/to/sql]
    PGMSG_TEST_PGPORT=25501 .venv/bin/python -m pytest tests/sql ...
    python -m tests.support.devdb down --port 25501

``up`` runs the deployed PostgreSQL image on 127.0.0.1:PORT (container ``pgmsg-dev-PORT``),
applies the migrations of ``--sql-dir``, and adds what the messaging_schema role adds on a
deploy: the inventory's webhook allowlist and in-transaction push setting, login roles in their groups and the client map.
The tests' ``dsn`` fixture points at it when ``PGMSG_TEST_PGPORT`` is set. Tests that need
the deployed containers (sample services, exporter, infra) still need the real deployment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jinja2
import psycopg
import yaml

from pgmsg import migrations
from tests.support.deployment import Deployment, inventory_vars
from tests.support.scratch import deployed_image, docker, remove, start_postgres

ROOT = Path(__file__).resolve().parents[2]
GROUPS = {
    "messaging_schema_publishers": "pgmsg_publisher",
    "messaging_schema_clients": "pgmsg_client",
    "messaging_schema_dispatchers": "pgmsg_dispatcher",
    "messaging_schema_admins": "pgmsg_admin",
    "messaging_schema_monitors": "pgmsg_monitor",
}


def up(port: int, sql_dir: Path) -> str:
    variables = inventory_vars(ROOT / "inventory/local/hosts.yml")
    deployed = Deployment(variables)
    command = json.loads(docker("inspect", "--format", "{{json .Config.Cmd}}", deployed.db_container))
    dsn = start_postgres(
        deployed_image(deployed.db_container),
        f"pgmsg-dev-{port}",
        port,
        password=variables["postgres_superuser_password"],
        dbname=deployed.db_name,
        command=without_archiving(command),
    ).dsn
    migrations.apply(dsn, sql_dir)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pgmsg_set_webhook_allowlist(%s)", (variables["messaging_schema_webhook_allowlist"],)
        )
        # As roles/messaging_schema/tasks/settings.yml does (the role's default is off).
        conn.execute(
            "SELECT pgmsg_set_in_transaction_push(%s)",
            (bool(variables.get("messaging_schema_in_transaction_push", False)),),
        )
        for key, group in GROUPS.items():
            for role in variables.get(key, []):
                conn.execute(
                    f'CREATE ROLE "{role["name"]}" LOGIN PASSWORD %s IN ROLE {group}'.replace(
                        "%s", "'" + role["password"].replace("'", "''") + "'"
                    )
                )
                if "client_id" in role:
                    conn.execute(
                        "INSERT INTO pgmsg_client_roles (role_name, client_id) VALUES (%s, %s)",
                        (role["name"], role["client_id"]),
                    )
        # The housekeeping jobs as this checkout's role would schedule them (not the deployed
        # ones: a branch that changes the jobs is tested with its own).
        prefix, jobs = housekeeping_jobs(variables)
        for name, schedule, command in jobs:
            conn.execute("SELECT pgmsg_ensure_cron_job(%s, %s, %s)", (prefix + name, schedule, command))
        conn.execute("SELECT pgmsg_prune_cron_jobs(%s, %s)", (prefix, [prefix + name for name, _, _ in jobs]))
    return dsn


def without_archiving(command: list[str]) -> list[str]:
    """The deployed server's command without its "-c archive_*" settings: the copy has no
    pgBackRest configuration or repository to archive into."""
    kept: list[str] = []
    for word in command:
        if kept and kept[-1] == "-c" and word.startswith("archive_"):
            kept.pop()
            continue
        kept.append(word)
    return kept


def housekeeping_jobs(variables: dict) -> tuple[str, list[tuple[str, str, str]]]:
    """housekeeping_jobs of roles/housekeeping/defaults/main.yml with the inventory's overrides,
    rendered as Ansible would (the jobs use only plain housekeeping_* values, `| int` and `| bool`)."""
    context = yaml.safe_load((ROOT / "roles/housekeeping/defaults/main.yml").read_text())
    context.update({k: v for k, v in variables.items() if k.startswith("housekeeping_")})
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    # Ansible's `bool` filter (housekeeping_keep_history): true, yes, on, 1 in any case are true.
    env.filters["bool"] = lambda v: (
        v if isinstance(v, bool) else str(v).strip().lower() in ("true", "yes", "on", "1")
    )

    def render(value: object) -> str:
        text = str(value)
        while "{{" in text:
            text = env.from_string(text).render(context)
        return text.strip()

    jobs = [
        (render(j["name"]), render(j["schedule"]), render(j["command"])) for j in context["housekeeping_jobs"]
    ]
    return render(context["housekeeping_job_prefix"]), jobs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--port", type=int, required=True, help="a port below 32768")
    parser.add_argument(
        "--sql-dir", type=Path, default=ROOT / "sql", help="the sql/ directory to migrate from"
    )
    args = parser.parse_args()
    if args.action == "down":
        remove(f"pgmsg-dev-{args.port}")
        return
    print(up(args.port, args.sql_dir))


if __name__ == "__main__":
    main()
