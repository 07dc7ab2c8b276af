"""sql/schema/<area>.sql: today's definition of every database object, one file per area.

The migrations (sql/migrations/NNN_*.sql.j2) stay the only source of change; these
files are generated from ``pg_dump --schema-only`` of a freshly migrated database so
that a reader finds the current body of every function in exactly one place. This
module migrates nothing: it splits a dump into objects, assigns each to an area by
AREAS (an object without one is an error naming it), normalises and writes the files.
scripts/schema-dump.py is the command that regenerates them.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pgmsg.errors import InvalidInput

#: Area -> (title, the objects it holds by name: tables, views, functions and procedures (every
#: overload goes with its name), types, standalone sequences, "schema <name>"). In this order the files can be applied to
#: an empty database (tests/sql/test_schema_files.py does): tables before the functions
#: that take their row types, functions before the triggers that call them, row-level
#: security last. What is not listed follows its owner: a column's comment, grants,
#: defaults, constraints, indexes and identity sequence go with their table; a trigger
#: goes with its trigger function; every policy, ``ENABLE ROW LEVEL SECURITY`` and default
#: privilege goes to roles_and_rls; extensions, and the grants on their members that
#: pg_dump writes (pg_init_privs), go to extensions.
AREAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "extensions": (
        "Extensions (pg_cron, pgsql-http, pgcrypto) and what PUBLIC may no longer run of them",
        (),
    ),
    "tables": (
        "Tables, their columns, constraints, indexes and grants; the migration bookkeeping",
        (
            "messages",
            "subscriptions",
            "message_delivery",
            "delivery_attempts",
            "message_inbox",
            "messages_history",
            "message_delivery_history",
            "delivery_attempts_history",
            "pgmsg_settings",
            "pgmsg_webhook_allowlist",
            "pgmsg_blocked_networks",
            "pgmsg_dispatchers",
            "pgmsg_client_roles",
            "pgmsg_removed_subscriptions",
            "pgmsg_backup_runs",
            "pgmsg_migrations",
            "pgmsg_refuse_id_change",
        ),
    ),
    "subscriptions": (
        "Subscriptions: checks on every write, signing secrets, removal bookkeeping",
        (
            "pgmsg_validate_subscription",
            "pgmsg_validate_subscription_semantics",
            "pgmsg_new_signing_secret",
            "pgmsg_signing_secret_problem",
            "pgmsg_rotate_secret",
            "pgmsg_ensure_subscription",
            "pgmsg_subscriptions_deleted",
            "pgmsg_subscriptions_truncated",
        ),
    ),
    "fan_out": (
        "Publishing and fan-out: message checks, the fan-out trigger, the envelope",
        (
            "pgmsg_reject",
            "pgmsg_validate_message",
            "pgmsg_matches",
            "pgmsg_prefixes",
            "pgmsg_fan_out",
            "pgmsg_envelope",
            "pgmsg_delivery_stats",
        ),
    ),
    "consume": (
        "Consuming async deliveries: claim, ack, nack with lease tokens",
        (
            "pgmsg_claim",
            "pgmsg_ack",
            "pgmsg_nack",
        ),
    ),
    "http": (
        "HTTP push: dispatcher claims and outcomes, URL policy, signatures, in-transaction push",
        (
            "pgmsg_claim_http_slots",
            "pgmsg_record_http_attempt",
            "pgmsg_record_http_attempts",
            "pgmsg_attempts_need_delivery",
            "pgmsg_webhook_id",
            "pgmsg_webhook_signature",
            "pgmsg_webhook_headers",
            "pgmsg_webhook_test_event",
            "pgmsg_webhook_url_problem",
            "pgmsg_always_blocked",
            "pgmsg_allowlist_entry_problem",
            "pgmsg_set_webhook_allowlist",
            "pgmsg_in_transaction_push_enabled",
            "pgmsg_set_in_transaction_push",
            "pgmsg_push_http",
            "retry_failed_http_push",
            "pgmsg_retry_in_transaction_pushes",
        ),
    ),
    "notify": (
        "NOTIFY delivery: the notification payload and the channel checks",
        (
            "pgmsg_notify_payload",
            "pgmsg_validate_notify_payload",
            "pgmsg_refuse_reserved_channel",
        ),
    ),
    "inbox": (
        "Deferred fan-out: the inbox drained into messages",
        (
            "pgmsg_fan_out_deferred",
            "pgmsg_deferred_status",
            "pgmsg_retry_deferred",
        ),
    ),
    "housekeeping": (
        "Housekeeping: retention, history, expired leases, orphaned deliveries, pg_cron jobs",
        (
            "pgmsg_housekeep",
            "pgmsg_archive_messages",
            "pgmsg_expire_messages",
            "pgmsg_lock_retirable_messages",
            "pgmsg_purge_deliveries",
            "pgmsg_trim_history",
            "pgmsg_trim_dispatchers",
            "pgmsg_trim_cron_runs",
            "pgmsg_release_expired_leases",
            "pgmsg_cancel_orphaned_deliveries",
            "pgmsg_messages_deleted",
            "pgmsg_messages_truncated",
            "pgmsg_deliveries_deleted",
            "pgmsg_deliveries_truncated",
            "pgmsg_ensure_cron_job",
            "pgmsg_prune_cron_jobs",
        ),
    ),
    "operations": (
        "Operations and monitoring: migrations, redrive, replay, cluster, cron and backup status",
        (
            "pgmsg_apply_migration",
            "pgmsg_redrive",
            "pgmsg_replay",
            "pgmsg_cron_jobs",
            "pgmsg_cluster_status",
            "pgmsg_backup_start",
            "pgmsg_backup_status",
        ),
    ),
    "roles_and_rls": (
        "Roles and row-level security: schema usage, default privileges, built-ins taken from PUBLIC, "
        "policies",
        (
            "schema public",
            "pgmsg_client_ids_of",
        ),
    ),
}

ENTRY_HEADER = re.compile(
    r"^--\n-- Name: (?P<name>.*?); Type: (?P<kind>[A-Z ]+); Schema: (?P<schema>[^;]*); "
    r"Owner: ?(?P<owner>.*)\n--\n",
    re.M,
)
#: Session settings pg_dump writes for its own restore (at an entry's start or end, never inside
#: a function body) and psql's \restrict guard (a new random key every dump).
SETTINGS = re.compile(r"^(?:SET [a-z_]+ = .*;|SELECT pg_catalog\.set_config\(.*\);|\\(?:un)?restrict .*|)$")
#: Every object is the superuser's; an owner other than postgres is kept.
OWNED_BY_POSTGRES = re.compile(r"^ALTER (?:TABLE|VIEW|SEQUENCE|FUNCTION|PROCEDURE) .* OWNER TO postgres;$")
#: Entries kept beside the object they belong to (after its definition) rather than in pg_dump's order.
#: Entries that define an object of their own (the owner of the entries that follow it).
DEFINITIONS = {
    "TABLE",
    "VIEW",
    "MATERIALIZED VIEW",
    "FUNCTION",
    "PROCEDURE",
    "AGGREGATE",
    "TYPE",
    "DOMAIN",
    "SCHEMA",
    "EXTENSION",
}
DEPENDENTS = {"COMMENT", "ACL", "CONSTRAINT", "INDEX", "DEFAULT", "SEQUENCE", "SEQUENCE OWNED BY"}


@dataclass
class Entry:
    kind: str  # pg_dump's type: FUNCTION, TABLE, ACL, TRIGGER, ...
    name: str  # pg_dump's name: "pgmsg_claim(text, ...)", "messages messages_pkey", "TABLE messages"
    schema: str  # pg_dump's schema: public, cron, pg_catalog or - (schemas, extensions)
    sql: str  # normalised statements
    owner: str = ""  # the object it belongs to (a table, view or function name), set by assign()
    area: str = ""


def dump(container: str, port: int, database: str) -> str:
    """pg_dump --schema-only of ``database``, run inside the PostgreSQL container so that its
    version is the server's."""
    return subprocess.run(
        [
            "docker",
            "exec",
            container,
            "pg_dump",
            "--schema-only",
            "-p",
            str(port),
            "-U",
            "postgres",
            database,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _query(container: str, port: int, database: str, sql: str) -> list[str]:
    return subprocess.run(
        ["docker", "exec", container, "psql", "-p", str(port), "-U", "postgres", "-d", database, "-Atc", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()


def migration_level(container: str, port: int, database: str) -> str:
    """The newest applied migration, e.g. '027_backup_runs'."""
    return _query(
        container, port, database, "SELECT name FROM pgmsg_migrations ORDER BY version DESC LIMIT 1"
    )[0]


def roles(container: str, port: int) -> list[str]:
    """The statements that make the roles the migrations created (pg_dumpall --roles-only,
    without postgres; a fresh server has no other role): cluster-wide, so not in a dump."""
    text = subprocess.run(
        [
            "docker",
            "exec",
            container,
            "pg_dumpall",
            "--roles-only",
            "--no-role-passwords",
            "-p",
            str(port),
            "-U",
            "postgres",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [
        line.replace(" GRANTED BY postgres", "")
        for line in text.splitlines()
        if re.match(r"(CREATE ROLE|ALTER ROLE|GRANT) ", line) and not re.search(r"ROLE postgres\b", line)
    ]


def normalise(sql: str) -> str:
    """One entry's statements without pg_dump's settings and postgres' ownership, blank-line
    runs made one blank line."""
    lines = [line.rstrip() for line in sql.splitlines() if not OWNED_BY_POSTGRES.match(line)]
    while lines and SETTINGS.match(lines[0]):
        lines.pop(0)
    while lines and SETTINGS.match(lines[-1]):  # the settings before the next entry's header
        lines.pop()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def split(text: str) -> list[Entry]:
    """The dump's objects in pg_dump's order (which respects dependencies)."""
    headers = list(ENTRY_HEADER.finditer(text))
    entries = []
    for header, following in zip(headers, [*headers[1:], None], strict=False):
        body = text[header.end() : following.start() if following else len(text)]
        body = body.split("\n-- PostgreSQL database dump complete", 1)[0]
        entries.append(Entry(header["kind"], header["name"], header["schema"], normalise(body)))
    return entries


def _base(name: str) -> str:
    """'pgmsg_claim(p_client text, ...)' -> 'pgmsg_claim'; 'COLUMN messages.id' -> 'messages'."""
    name = name.split("(", 1)[0].strip()
    for prefix in (
        "TABLE ",
        "VIEW ",
        "MATERIALIZED VIEW ",
        "FUNCTION ",
        "PROCEDURE ",
        "AGGREGATE ",
        "TYPE ",
        "DOMAIN ",
        "SEQUENCE ",
        "COLUMN ",
        "EXTENSION ",
    ):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name.split(".", 1)[0] if "." in name else name


def assign(entries: list[Entry]) -> None:
    """Set each entry's owner and area; refuse an object AREAS does not place, and a name in
    AREAS the database does not have (a dropped object's stale entry)."""
    area_of = {name: area for area, (_, names) in AREAS.items() for name in names}
    sequence_table = {}  # identity sequence -> its table
    for e in entries:
        if e.kind == "SEQUENCE" and (table := re.search(r"ALTER TABLE public\.([a-z_0-9]+)", e.sql)):
            sequence_table[e.name] = table.group(1)
    index_table = {  # index -> its table: a comment on an index goes where the index does
        e.name: table.group(1)
        for e in entries
        if e.kind == "INDEX" and (table := re.search(r"\bON (?:ONLY )?public\.([a-z_0-9]+)", e.sql))
    }
    defined = {
        ("schema " + e.name) if e.kind == "SCHEMA" else _base(e.name)
        for e in entries
        if e.kind in DEFINITIONS - {"EXTENSION"} or (e.kind == "SEQUENCE" and e.name not in sequence_table)
    }
    unplaced = []
    for e in entries:
        if e.kind in ("EXTENSION",) or (e.kind == "COMMENT" and e.name.startswith("EXTENSION ")):
            e.owner, e.area = _base(e.name), "extensions"
        elif e.kind in ("POLICY", "ROW SECURITY", "DEFAULT ACL"):
            e.owner, e.area = e.name, "roles_and_rls"
        elif e.kind == "TRIGGER":
            function = re.search(r"EXECUTE FUNCTION public\.([a-z_0-9]+)\(", e.sql)
            e.owner = e.name
            e.area = area_of.get(function.group(1), "") if function else ""
        else:
            if e.kind in ("CONSTRAINT", "FK CONSTRAINT", "DEFAULT"):
                e.owner = e.name.split(" ", 1)[0]
            elif e.kind == "INDEX":
                e.owner = index_table.get(e.name, e.name)
            elif e.kind in ("SEQUENCE", "SEQUENCE OWNED BY") or e.name.startswith("SEQUENCE "):
                e.owner = sequence_table.get(_base(e.name), _base(e.name))
            elif e.kind == "COMMENT" and e.name.startswith("INDEX "):
                e.owner = index_table.get(e.name.removeprefix("INDEX "), e.name)
            elif e.kind == "SCHEMA" or e.name.startswith("SCHEMA "):
                e.owner = "schema " + e.name.removeprefix("SCHEMA ")
            else:
                e.owner = _base(e.name)
            if e.kind == "ACL" and e.owner not in defined and e.owner not in area_of:
                # pg_dump writes grants on objects it does not define when they differ from what
                # initdb or the extension's script gave (pg_init_privs): built-in functions
                # (pg_catalog, e.g. the large-object ones taken from PUBLIC) and extensions' members.
                e.area = "roles_and_rls" if e.schema == "pg_catalog" else "extensions"
            else:
                e.area = area_of.get(e.owner, "")
        if not e.area:
            unplaced.append(f"{e.kind} {e.name}")
    if unplaced:
        raise InvalidInput(
            "objects without an area: add them to AREAS in src/pgmsg/schema_files.py: " + "; ".join(unplaced)
        )
    stale = sorted(set(area_of) - defined - {"schema public"})
    if stale:
        raise InvalidInput(
            "AREAS in src/pgmsg/schema_files.py names objects the database does not have "
            "(remove them): " + ", ".join(stale)
        )


def render(text: str, level: str, roles: list[str]) -> dict[str, str]:
    """Area -> the file's text, from a dump of a database migrated up to ``level`` whose
    migrations created ``roles`` (the statements of roles())."""
    entries = split(text)
    assign(entries)
    # A dependent follows its owner's definition (the last one: every overload of a function
    # shares its name, and its grants name the overload).
    defined_at = {(e.area, e.owner): position for position, e in enumerate(entries) if e.kind in DEFINITIONS}
    files = {}
    for area, (title, _) in AREAS.items():
        mine = [
            (defined_at.get((e.area, e.owner), position) if e.kind in DEPENDENTS else position, position, e)
            for position, e in enumerate(entries)
            if e.area == area
        ]
        parts = [header(title, level)]
        if area == "roles_and_rls":
            parts.append(
                "-- The group roles the migrations create. Roles are cluster-wide, so no dump of the\n"
                "-- database holds them; as pg_dumpall --roles-only writes them:\n"
                + "\n".join(f"--   {line}" for line in roles)
                + "\n"
                "-- Login roles are members of these, created per inventory by roles/messaging_schema\n"
                "-- (tasks/roles.yml), never by a migration: no file here names one."
            )
        for _, _, e in sorted(mine, key=lambda t: t[:2]):
            if not e.sql:
                continue
            banner = "" if e.kind in DEPENDENTS - {"SEQUENCE"} else f"-- {e.kind.lower()} {e.name}\n"
            parts.append(banner + e.sql)
        files[area] = "\n\n".join(parts) + "\n"
    return files


def header(title: str, level: str) -> str:
    return (
        f"-- {title}.\n"
        f"--\n"
        f"-- GENERATED by scripts/schema-dump.py from a database migrated up to {level}\n"
        f"-- (sql/bootstrap.sql and sql/migrations/*.sql.j2 rendered for inventory/local). Do not edit:\n"
        f"-- change the schema with a new migration, then regenerate (sql/schema/README.md).\n"
        f"-- Objects are owned by postgres unless an OWNER TO says otherwise; pg_dump's settings are left out."
    )


def write(files: dict[str, str], directory: Path) -> list[Path]:
    """Write every area's file into ``directory``; remove area files no longer produced."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for area, text in files.items():
        path = directory / f"{area}.sql"
        path.write_text(text)
        written.append(path)
    for path in directory.glob("*.sql"):
        if path not in written:
            path.unlink()
    return written
