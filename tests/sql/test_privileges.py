"""The privilege matrix: who may do what on every object of the messaging database.

EXPECTED below is the one place that says it. Every function, table, view,
sequence and schema of the schemas pgmsg uses (``public``, with the extensions'
objects, and pg_cron's ``cron``) is compared, for every pgmsg group role, every
login role of the local inventory and a role with no grants at all (what PUBLIC
gets), with what PostgreSQL reports (has_*_privilege). An object without an
entry fails the test: add one. A role not named in an entry must hold nothing.

Entries are written per group role; a login role must hold exactly what its
inventory group holds. Privileges are space-separated; a privilege held on some
columns only is written ``PRIV(col, col)``, in column order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

GROUPS = ("pgmsg_publisher", "pgmsg_client", "pgmsg_dispatcher", "pgmsg_admin", "pgmsg_monitor")

#: Inventory list of login roles -> the group each is a member of.
LOGIN_GROUPS = {
    "messaging_schema_publishers": "pgmsg_publisher",
    "messaging_schema_clients": "pgmsg_client",
    "messaging_schema_dispatchers": "pgmsg_dispatcher",
    "messaging_schema_admins": "pgmsg_admin",
    "messaging_schema_monitors": "pgmsg_monitor",
}

#: Stands for PUBLIC: a role that was granted nothing.
NOBODY = "pgmsg_privilege_probe"

PUB, CLI, DIS, ADM, MON = GROUPS
ALL_GROUPS = dict.fromkeys(GROUPS, "USAGE")
ADMIN_TABLE = "SELECT INSERT UPDATE DELETE"
SUBSCRIPTION_COLUMNS_BUT_SECRETS = (
    "id, client_id, delivery_mode, message_type, namespace, webhook_url, notify_channel, http_timeout_ms, active, "
    "created_at, updated_at, max_attempts, lease_seconds, push_mode, retry_base_ms, retry_max_ms, "
    "previous_secret_expires_at, payload_filter, ordered, durable, deactivated_reason, notify_payload, max_in_flight"
)
DELIVERY_STATE = (
    "status, updated_at, claimed_at, delivered_at, retry_count, last_error, attempts, "
    "next_attempt_at, lease_expires_at, claimed_by, dead_at, lease_token"
)

# pgcrypto: pure computation, but PUBLIC gets nothing. The secret generator and
# the subscription trigger (run as the writer) need random bytes.
PGCRYPTO = (
    "armor(bytea)",
    "armor(bytea,text[],text[])",
    "crypt(text,text)",
    "dearmor(text)",
    "decrypt(bytea,bytea,text)",
    "decrypt_iv(bytea,bytea,bytea,text)",
    "digest(bytea,text)",
    "digest(text,text)",
    "encrypt(bytea,bytea,text)",
    "encrypt_iv(bytea,bytea,bytea,text)",
    "public.gen_random_uuid()",
    "gen_salt(text)",
    "gen_salt(text,integer)",
    "hmac(bytea,bytea,text)",
    "hmac(text,text,text)",
    "pgp_armor_headers(text)",
    "pgp_key_id(bytea)",
    "pgp_pub_decrypt(bytea,bytea)",
    "pgp_pub_decrypt(bytea,bytea,text)",
    "pgp_pub_decrypt(bytea,bytea,text,text)",
    "pgp_pub_decrypt_bytea(bytea,bytea)",
    "pgp_pub_decrypt_bytea(bytea,bytea,text)",
    "pgp_pub_decrypt_bytea(bytea,bytea,text,text)",
    "pgp_pub_encrypt(text,bytea)",
    "pgp_pub_encrypt(text,bytea,text)",
    "pgp_pub_encrypt_bytea(bytea,bytea)",
    "pgp_pub_encrypt_bytea(bytea,bytea,text)",
    "pgp_sym_decrypt(bytea,text)",
    "pgp_sym_decrypt(bytea,text,text)",
    "pgp_sym_decrypt_bytea(bytea,text)",
    "pgp_sym_decrypt_bytea(bytea,text,text)",
    "pgp_sym_encrypt(text,text)",
    "pgp_sym_encrypt(text,text,text)",
    "pgp_sym_encrypt_bytea(bytea,text)",
    "pgp_sym_encrypt_bytea(bytea,text,text)",
)
# pgsql-http: only the in-transaction push (SECURITY DEFINER, owned by the
# superuser) makes requests from the database.
PGSQL_HTTP = (
    "bytea_to_text(bytea)",
    "http(http_request)",
    "http_delete(character varying)",
    "http_delete(character varying,character varying,character varying)",
    "http_get(character varying)",
    "http_get(character varying,jsonb)",
    "http_head(character varying)",
    "http_header(character varying,character varying)",
    "http_list_curlopt()",
    "http_patch(character varying,character varying,character varying)",
    "http_post(character varying,character varying,character varying)",
    "http_post(character varying,jsonb)",
    "http_put(character varying,character varying,character varying)",
    "http_reset_curlopt()",
    "http_set_curlopt(character varying,character varying)",
    "text_to_bytea(text)",
    "urlencode(bytea)",
    "urlencode(character varying)",
    "urlencode(jsonb)",
)
# pg_cron: jobs belong to the superuser; administrators and monitoring see them
# through pgmsg_cron_jobs().
PG_CRON = (
    "cron.alter_job(bigint,text,text,text,text,boolean)",
    "cron.job_cache_invalidate()",
    "cron.schedule(text,text)",
    "cron.schedule(text,text,text)",
    "cron.schedule_in_database(text,text,text,text,text,boolean)",
    "cron.unschedule(bigint)",
    "cron.unschedule(text)",
)

#: object -> {group role: privileges}. Every group not named holds nothing, and so does PUBLIC.
EXPECTED: dict[str, dict[str, str]] = {
    # -- schemas ---------------------------------------------------------------
    "schema public": ALL_GROUPS,
    "schema cron": {},
    # -- tables ----------------------------------------------------------------
    "table messages": {
        PUB: "SELECT(id, created_at) INSERT(message_type, namespace, payload, message_key)",
        CLI: "SELECT",
        DIS: "SELECT",
        ADM: ADMIN_TABLE,
        MON: "SELECT(id, message_type, namespace, created_at, published_by)",
    },
    "table message_inbox": {
        PUB: "SELECT(id, created_at) INSERT(message_type, namespace, payload, message_key)",
        ADM: ADMIN_TABLE,
        MON: "SELECT(id, message_type, namespace, created_at, failed_at, error)",
    },
    "table subscriptions": {
        # signing_secret and previous_signing_secret: the dispatcher and the owning client (RLS) only.
        CLI: "SELECT",
        DIS: "SELECT UPDATE(active, updated_at, deactivated_reason)",
        ADM: f"SELECT({SUBSCRIPTION_COLUMNS_BUT_SECRETS}) INSERT UPDATE DELETE",
        MON: f"SELECT({SUBSCRIPTION_COLUMNS_BUT_SECRETS})",
    },
    "table message_delivery": {
        CLI: f"SELECT UPDATE({DELIVERY_STATE})",
        DIS: "SELECT UPDATE(status, updated_at, claimed_at, delivered_at, push_attempted_at, push_status_code, "
        "retry_count, last_error, attempts, next_attempt_at, lease_expires_at, claimed_by, dead_at, lease_token)",
        ADM: ADMIN_TABLE,
        MON: "SELECT",
    },
    "table delivery_attempts": {CLI: "SELECT", DIS: "INSERT", ADM: ADMIN_TABLE, MON: "SELECT"},
    # Written by pgmsg_set_webhook_allowlist only, which only the deployment runs.
    "table pgmsg_webhook_allowlist": {DIS: "SELECT", ADM: "SELECT"},
    "table pgmsg_blocked_networks": {DIS: "SELECT", ADM: "SELECT"},
    # Whether the database pushes webhooks itself: the deployment's decision (018).
    "table pgmsg_settings": {ADM: "SELECT", MON: "SELECT"},
    "function pgmsg_set_in_transaction_push(boolean)": {},
    "function pgmsg_in_transaction_push_enabled()": dict.fromkeys(GROUPS, "EXECUTE"),
    "function pgmsg_allowlist_entry_problem(text)": {},
    # The subscription trigger runs it as whoever writes a subscription.
    "function pgmsg_signing_secret_problem(text)": {DIS: "EXECUTE", ADM: "EXECUTE"},
    "table pgmsg_dispatchers": {DIS: "SELECT INSERT UPDATE", ADM: ADMIN_TABLE, MON: "SELECT"},
    "table pgmsg_client_roles": {ADM: ADMIN_TABLE},
    "table pgmsg_migrations": {ADM: ADMIN_TABLE, MON: "SELECT"},
    "table messages_history": {ADM: ADMIN_TABLE},
    "table message_delivery_history": {ADM: ADMIN_TABLE},
    "table delivery_attempts_history": {ADM: ADMIN_TABLE},
    # Recent subscription removals, for the sweep of deliveries a racing publish wrote (023):
    # written by the deletion triggers and the sweep (SECURITY DEFINER) only.
    "table pgmsg_removed_subscriptions": {},
    # pgBackRest runs started from pg_cron (027): written by the runs (the superuser), read by operators
    # and monitoring (`pgmsg health`, the exporter).
    "table pgmsg_backup_runs": {ADM: "SELECT", MON: "SELECT"},
    "view pgmsg_backup_status": {ADM: "SELECT", MON: "SELECT"},
    "table cron.job": {},
    "table cron.job_run_details": {},
    # -- sequences -------------------------------------------------------------
    # message_inbox's id default calls nextval() on messages' sequence (publishers and, for
    # `pgmsg publish --deferred`, administrators: 023).
    "sequence messages_id_seq": {PUB: "USAGE", ADM: "USAGE"},
    "sequence subscriptions_id_seq": {},
    "sequence message_delivery_id_seq": {},
    "sequence delivery_attempts_id_seq": {},
    "sequence pgmsg_backup_runs_id_seq": {},
    "sequence cron.jobid_seq": {},
    "sequence cron.runid_seq": {},
    # -- pgmsg functions -------------------------------------------------------
    # Publishing: the validation trigger raises through pgmsg_reject as the publisher.
    "function pgmsg_reject(text,text)": {PUB: "EXECUTE", CLI: "EXECUTE", DIS: "EXECUTE", ADM: "EXECUTE"},
    "function pgmsg_delivery_stats(bigint[])": {PUB: "EXECUTE", ADM: "EXECUTE", MON: "EXECUTE"},
    # Consuming; RLS policies call pgmsg_client_ids_of as the client.
    "function pgmsg_client_ids_of(name)": {CLI: "EXECUTE"},
    "function pgmsg_claim(text,integer,text,integer,boolean)": {CLI: "EXECUTE", ADM: "EXECUTE"},
    "function pgmsg_ack(bigint[],uuid[])": {CLI: "EXECUTE", ADM: "EXECUTE"},
    "function pgmsg_nack(bigint,uuid,double precision,text)": {CLI: "EXECUTE", ADM: "EXECUTE"},
    # Dispatching; its writes to subscriptions (410 Gone) run the URL check.
    "function pgmsg_claim_http_slots(integer,integer,text,integer,bigint[],integer[],integer)": {
        DIS: "EXECUTE",
        ADM: "EXECUTE",
    },
    "function pgmsg_record_http_attempt(bigint,uuid,integer,text,numeric,double precision)": {
        DIS: "EXECUTE",
        ADM: "EXECUTE",
    },
    "function pgmsg_record_http_attempts(bigint[],uuid[],integer[],text[],numeric[],double precision[])": {
        DIS: "EXECUTE",
        ADM: "EXECUTE",
    },
    "function pgmsg_envelope(messages)": {CLI: "EXECUTE", DIS: "EXECUTE", ADM: "EXECUTE"},
    "function pgmsg_webhook_id(message_delivery)": {DIS: "EXECUTE", ADM: "EXECUTE"},
    "function pgmsg_webhook_url_problem(text)": {DIS: "EXECUTE", ADM: "EXECUTE"},
    "function pgmsg_always_blocked(inet)": {DIS: "EXECUTE", ADM: "EXECUTE"},
    "function pgmsg_fan_out_deferred(integer)": {DIS: "EXECUTE", ADM: "EXECUTE"},
    "function pgmsg_deferred_status()": {DIS: "EXECUTE", ADM: "EXECUTE", MON: "EXECUTE"},
    # Operating.
    "function pgmsg_matches(text,text)": {ADM: "EXECUTE"},
    "function pgmsg_prefixes(text)": {ADM: "EXECUTE"},
    "function pgmsg_notify_payload(messages,bigint)": {ADM: "EXECUTE"},
    "function pgmsg_webhook_signature(subscriptions,text,bigint,text)": {DIS: "EXECUTE", ADM: "EXECUTE"},
    # One webhook contract (028): the headers every sender sends, signed in the dispatcher's claim.
    "function pgmsg_webhook_headers(subscriptions,text,bigint,text,bigint,bigint,text,text)": {
        DIS: "EXECUTE"
    },
    "function pgmsg_push_http(bigint)": {ADM: "EXECUTE"},
    "function retry_failed_http_push(text,integer,interval,bigint[])": {ADM: "EXECUTE"},
    "function retry_failed_http_push(bigint,text)": {ADM: "EXECUTE"},
    "function pgmsg_redrive(text,bigint[])": {ADM: "EXECUTE"},
    "function pgmsg_replay(text,bigint,timestamp with time zone,timestamp with time zone)": {ADM: "EXECUTE"},
    "function pgmsg_rotate_secret(bigint,interval,text)": {ADM: "EXECUTE"},
    "function pgmsg_new_signing_secret()": {ADM: "EXECUTE"},
    "function pgmsg_archive_messages(interval,integer)": {ADM: "EXECUTE"},
    "function pgmsg_expire_messages(interval,integer)": {ADM: "EXECUTE"},
    "function pgmsg_lock_retirable_messages(interval,integer)": {ADM: "EXECUTE"},
    "function pgmsg_purge_deliveries(interval,integer)": {ADM: "EXECUTE"},
    "function pgmsg_housekeep(text,interval,integer,interval)": {ADM: "EXECUTE"},
    "function pgmsg_trim_history(interval,integer)": {ADM: "EXECUTE"},
    "function pgmsg_trim_dispatchers(interval)": {ADM: "EXECUTE"},
    "function pgmsg_trim_cron_runs(interval,integer)": {},  # pg_cron's table: the superuser's job only
    "function pgmsg_release_expired_leases()": {ADM: "EXECUTE"},
    "function pgmsg_cancel_orphaned_deliveries(integer)": {ADM: "EXECUTE"},
    # Signs the fixed test event for `pgmsg subscriptions test`: administrators may not read secrets.
    "function pgmsg_webhook_test_event(bigint)": {ADM: "EXECUTE"},
    "function pgmsg_retry_in_transaction_pushes()": {ADM: "EXECUTE"},
    "function pgmsg_retry_deferred(bigint[])": {ADM: "EXECUTE"},
    "function pgmsg_cron_jobs()": {ADM: "EXECUTE", MON: "EXECUTE"},
    # Which node, its timeline, its replicas and their lag (026): no query texts.
    "function pgmsg_cluster_status()": {ADM: "EXECUTE", MON: "EXECUTE"},
    # The deployment's (the superuser's) only.
    "function pgmsg_apply_migration(integer,text,text,text)": {},
    "function pgmsg_set_webhook_allowlist(text[])": {},
    "function pgmsg_ensure_cron_job(text,text,text)": {},
    "function pgmsg_prune_cron_jobs(text,text[])": {},
    "function pgmsg_ensure_subscription(jsonb)": {},
    # Runs a program on the database server (COPY FROM PROGRAM): the superuser's pg_cron jobs only.
    "function pgmsg_backup_start(text,text)": {},
    # Trigger functions: never called directly (their triggers fire regardless of EXECUTE).
    "function pgmsg_validate_message()": {},
    "function pgmsg_validate_subscription()": {},
    "function pgmsg_validate_notify_payload()": {},
    "function pgmsg_validate_subscription_semantics()": {},
    "function pgmsg_fan_out()": {},
    "function pgmsg_messages_deleted()": {},
    "function pgmsg_deliveries_deleted()": {},
    "function pgmsg_deliveries_truncated()": {},
    "function pgmsg_attempts_need_delivery()": {},
    "function pgmsg_subscriptions_deleted()": {},
    "function pgmsg_messages_truncated()": {},
    "function pgmsg_subscriptions_truncated()": {},
    "function pgmsg_refuse_id_change()": {},
    "function pgmsg_refuse_reserved_channel()": {},
    # -- extensions' functions -------------------------------------------------
    **{f"function {signature}": {} for signature in PGSQL_HTTP + PG_CRON + PGCRYPTO},
    "function gen_random_bytes(integer)": {DIS: "EXECUTE", ADM: "EXECUTE"},
    "function hmac(bytea,bytea,text)": {DIS: "EXECUTE"},
}

_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
_COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")


def objects(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, int]]:
    """Every object of the matrix: its name in EXPECTED -> (kind, oid)."""
    found: dict[str, tuple[str, int]] = {}
    for row in conn.execute(
        "SELECT n.oid, n.nspname FROM pg_namespace n WHERE n.nspname IN ('public', 'cron')"
    ).fetchall():
        found[f"schema {row['nspname']}"] = ("schema", row["oid"])
    for row in conn.execute(
        """
            SELECT c.oid, c.oid::regclass::text AS name,
                   CASE WHEN c.relkind = 'S' THEN 'sequence' WHEN c.relkind IN ('v', 'm') THEN 'view'
                        ELSE 'table' END AS kind
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('public', 'cron') AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
            """
    ).fetchall():
        found[f"{row['kind']} {row['name']}"] = (row["kind"], row["oid"])
    for row in conn.execute(
        """
            SELECT p.oid, p.oid::regprocedure::text AS name
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname IN ('public', 'cron')
            """
    ).fetchall():
        found[f"function {row['name']}"] = ("function", row["oid"])
    return found


def held(conn: psycopg.Connection[Any], role: str, kind: str, oid: int) -> str:
    """What role holds on the object, written as in EXPECTED."""
    if kind == "schema":
        return " ".join(
            p
            for p in ("USAGE", "CREATE")
            if conn.execute("SELECT has_schema_privilege(%s, %s::oid, %s) AS ok", (role, oid, p)).fetchone()[
                "ok"
            ]
        )
    if kind == "function":
        return (
            "EXECUTE"
            if conn.execute(
                "SELECT has_function_privilege(%s, %s::oid, 'EXECUTE') AS ok", (role, oid)
            ).fetchone()["ok"]
            else ""
        )
    if kind == "sequence":
        return " ".join(
            p
            for p in ("USAGE", "SELECT", "UPDATE")
            if conn.execute(
                "SELECT has_sequence_privilege(%s, %s::oid, %s) AS ok", (role, oid, p)
            ).fetchone()["ok"]
        )
    parts = []
    for privilege in _TABLE_PRIVILEGES:
        if conn.execute(
            "SELECT has_table_privilege(%s, %s::oid, %s) AS ok", (role, oid, privilege)
        ).fetchone()["ok"]:
            parts.append(privilege)
        elif privilege in _COLUMN_PRIVILEGES:
            columns = [
                r["attname"]
                for r in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::oid AND attnum > 0 AND NOT attisdropped "
                    "AND has_column_privilege(%s, attrelid, attnum, %s) ORDER BY attnum",
                    (oid, role, privilege),
                ).fetchall()
            ]
            if columns:
                parts.append(f"{privilege}({', '.join(columns)})")
    return " ".join(parts)


def canonical(privileges: str) -> str:
    """Privileges in a fixed order, so that EXPECTED may list them in any."""
    order = {p: i for i, p in enumerate(("USAGE", "CREATE", "EXECUTE", *_TABLE_PRIVILEGES))}
    words: list[str] = []
    depth = 0
    for token in privileges.replace(", ", ",").split():
        if depth:
            words[-1] += " " + token
        else:
            words.append(token)
        depth += token.count("(") - token.count(")")
    return " ".join(sorted(words, key=lambda w: order.get(w.split("(")[0], 99))).replace(",", ", ")


@pytest.fixture
def superuser(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def nobody(superuser: psycopg.Connection[Any]) -> Iterator[str]:
    """A role granted nothing: what it holds is what PUBLIC holds."""
    superuser.execute(f"DROP ROLE IF EXISTS {NOBODY}")
    superuser.execute(f"CREATE ROLE {NOBODY} NOLOGIN")
    yield NOBODY
    superuser.execute(f"DROP ROLE IF EXISTS {NOBODY}")


def test_every_object_has_an_entry(superuser: psycopg.Connection[Any]) -> None:
    missing = sorted(set(objects(superuser)) - set(EXPECTED))
    assert not missing, (
        "objects without an entry in EXPECTED of tests/sql/test_privileges.py (add one saying "
        "which group may do what, {} for nobody): " + "; ".join(missing)
    )


def test_no_entry_names_a_missing_object(superuser: psycopg.Connection[Any]) -> None:
    gone = sorted(set(EXPECTED) - set(objects(superuser)))
    assert not gone, "entries in EXPECTED for objects the database does not have: " + "; ".join(gone)


def test_every_role_holds_exactly_what_the_matrix_says(
    superuser: psycopg.Connection[Any], nobody: str, inventory_vars: dict[str, Any]
) -> None:
    roles = {group: group for group in GROUPS}
    roles[nobody] = "PUBLIC"
    for key, group in LOGIN_GROUPS.items():
        for login in inventory_vars.get(key, []):
            roles[login["name"]] = group
    differences = []
    for name, (kind, oid) in sorted(objects(superuser).items()):
        expected = EXPECTED.get(name, {})
        for role, group in roles.items():
            want = canonical(expected.get(group, ""))
            have = canonical(held(superuser, role, kind, oid))
            if want != have:
                who = role if role == group else f"{role} (login of {group})"
                differences.append(
                    f"{name}: {who if group != 'PUBLIC' else 'PUBLIC'} "
                    f"should hold '{want}' but holds '{have}'"
                )
    assert not differences, "privileges differ from EXPECTED:\n  " + "\n  ".join(differences)


def test_functions_created_later_are_not_executable_by_public(
    superuser: psycopg.Connection[Any], nobody: str
) -> None:
    """Default privileges: a migration that forgets its REVOKE still gives PUBLIC nothing."""
    with superuser.transaction(force_rollback=True):
        superuser.execute("CREATE FUNCTION pgmsg_privilege_probe_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        row = superuser.execute(
            "SELECT has_function_privilege(%s, 'pgmsg_privilege_probe_fn()', 'EXECUTE') AS ok", (nobody,)
        ).fetchone()
    assert row["ok"] is False


def test_no_role_may_create_temporary_or_other_objects_in_the_database(
    superuser: psycopg.Connection[Any], nobody: str, inventory_vars: dict[str, Any]
) -> None:
    """PostgreSQL gives PUBLIC CONNECT and TEMPORARY on every new database. CONNECT is what
    logging in needs; TEMPORARY let a role in no group create tables (and fill the disk)."""
    roles = [
        *GROUPS,
        nobody,
        *(login["name"] for key in LOGIN_GROUPS for login in inventory_vars.get(key, [])),
    ]
    held_by = {
        role: [
            p
            for p in ("CONNECT", "CREATE", "TEMPORARY")
            if superuser.execute(
                "SELECT has_database_privilege(%s, current_database(), %s) AS ok", (role, p)
            ).fetchone()["ok"]
        ]
        for role in roles
    }
    assert held_by == {key: ["CONNECT"] for key in roles}


@pytest.mark.parametrize("create", ["lo_from_bytea(0, 'x'::bytea)", "lo_create(0)", "lo_creat(-1)"])
def test_no_login_role_may_store_large_objects(dsn: str, inventory_vars: dict[str, Any], create: str) -> None:
    """Large objects outlive the session and count against nobody's quota: PUBLIC may create them
    by default, so every login (a client, a publisher) could fill the database's disk."""
    for key in LOGIN_GROUPS:
        for login in inventory_vars.get(key, []):
            params = psycopg.conninfo.conninfo_to_dict(dsn)
            params.update(user=login["name"], password=login["password"])
            with (
                psycopg.connect(psycopg.conninfo.make_conninfo(**params)) as conn,
                pytest.raises(psycopg.errors.InsufficientPrivilege),
            ):
                conn.execute(f"SELECT {create}")
