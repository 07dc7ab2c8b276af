"""SSRF protection in the database, and least-privilege roles with row-level security."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jinja2
import psycopg
import pytest
import yaml
from psycopg.rows import dict_row

from pgmsg import Client, InvalidInput, PgmsgError
from tests.conftest import ROOT
from tests.support.waiting import wait_until


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.5/hook", "webhook target 10.0.0.5 refused: not in the webhook allowlist"),
        ("http://192.168.1.1/hook", "not in the webhook allowlist"),
        ("http://172.16.0.1/hook", "not in the webhook allowlist"),
        ("http://127.0.0.2:8080/hook", "webhook target 127.0.0.2 refused: not in the webhook allowlist"),
        ("http://169.254.169.254/latest/meta-data", "link-local / cloud metadata address"),
        ("http://[fe80::1]/hook", "link-local address"),
        ("http://[::ffff:169.254.169.254]/hook", "link-local / cloud metadata address"),
        ("http://[::ffff:10.0.0.1]/hook", "webhook target 10.0.0.1 refused"),
        ("http://[::1]/hook", "not in the webhook allowlist"),
        ("http://2130706433/hook", "numeric hosts must be written as a dotted quad"),
        ("http://0x7f000001/hook", "numeric hosts must be written as a dotted quad"),
        ("http://0177.0.0.1/hook", "numeric hosts must be written as a dotted quad"),
        ("http://127.1/hook", "numeric hosts must be written as a dotted quad"),
        ("http://metadata.google.internal/computeMetadata", "webhook host metadata.google.internal refused"),
        ("http://user:pw@127.0.0.1/hook", "must not carry credentials"),
    ],
)
def test_webhook_targets_outside_the_allowlist_are_refused(
    db: psycopg.Connection[Any], url: str, reason: str
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        db.execute(
            "INSERT INTO subscriptions (client_id, delivery_mode, webhook_url) VALUES ('ssrf-probe', 'http', %s)",
            (url,),
        )
    assert reason in caught.value.diag.message_primary
    assert "allowlist" in caught.value.diag.message_hint


def test_update_cannot_bypass_the_allowlist(client: Client, db: psycopg.Connection[Any], run_id: str) -> None:
    sub = client.subscribe(run_id + "-h", "http", webhook_url="http://127.0.0.1:8080/ok")
    with pytest.raises(psycopg.errors.CheckViolation, match="link-local / cloud metadata"):
        db.execute(
            "UPDATE subscriptions SET webhook_url = 'http://169.254.169.254/' WHERE id = %s", (sub.id,)
        )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "http://localhost:8080/hook", "https://127.0.0.1/x"]
)
def test_allowlisted_targets_are_accepted(client: Client, run_id: str, url: str) -> None:
    assert client.subscribe(run_id + "-ok", "http", webhook_url=url).webhook_url == url


def test_allowlist_entries_are_checked(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="invalid allowlist network"):
        db.execute("SELECT pgmsg_set_webhook_allowlist(ARRAY['10.0.0.1/8'])")
    with pytest.raises(psycopg.errors.CheckViolation, match="invalid allowlist entry"):
        db.execute("SELECT pgmsg_set_webhook_allowlist(ARRAY['not a host!'])")


def test_signing_secret_is_generated_and_validated(client: Client, run_id: str) -> None:
    sub = client.subscribe(run_id + "-sec", "http", webhook_url="http://127.0.0.1:8080/ok")
    assert sub.signing_secret is not None and sub.signing_secret.startswith("whsec_")
    with pytest.raises(InvalidInput, match="signing_secret must be whsec_"):
        client.subscribe(
            run_id + "-sec2", "http", webhook_url="http://127.0.0.1:8080/ok", signing_secret="hunter2"
        )


# -- roles and row-level security ---------------------------------------------


def role_dsn(dsn: str, user: str, password: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params.update(user=user, password=password)
    return psycopg.conninfo.make_conninfo(**params)


LOGIN_KEYS = (
    "messaging_schema_publishers",
    "messaging_schema_clients",
    "messaging_schema_dispatchers",
    "messaging_schema_admins",
    "messaging_schema_monitors",
)


def login_passwords(inventory_vars: dict[str, Any]) -> dict[str, str]:
    """Every login role the local inventory declares, with its password."""
    return {r["name"]: r["password"] for key in LOGIN_KEYS for r in inventory_vars.get(key, [])}


@pytest.fixture
def login(dsn: str, inventory_vars: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Connect as one of the login roles the local inventory declares."""
    declared = login_passwords(inventory_vars)
    opened: list[psycopg.Connection[Any]] = []

    def connect(name: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(role_dsn(dsn, name, declared[name]), autocommit=True, row_factory=dict_row)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def two_clients(client: Client, db: psycopg.Connection[Any], run_id: str) -> Iterator[int]:
    """A message delivered to the two probe clients (no running service consumes as them)."""
    mtype = run_id + ".rls"
    for cid in ("rls-probe-a", "rls-probe-b"):
        db.execute(
            "INSERT INTO subscriptions (client_id, delivery_mode, message_type) VALUES (%s, 'async', %s)",
            (cid, mtype),
        )
    message_id = client.publish(mtype, {"secret": "for both"})
    yield message_id
    db.execute("DELETE FROM subscriptions WHERE message_type = %s", (mtype,))


def test_client_sees_and_updates_only_its_own_deliveries(login, two_clients: int) -> None:  # type: ignore[no-untyped-def]
    probe_a = login("rls_probe_a")
    rows = probe_a.execute(
        "SELECT client_id FROM message_delivery WHERE message_id = %s", (two_clients,)
    ).fetchall()
    assert [r["client_id"] for r in rows] == ["rls-probe-a"]
    updated = probe_a.execute(
        "UPDATE message_delivery SET status = 'delivered' WHERE message_id = %s "
        "AND client_id = 'rls-probe-b'",
        (two_clients,),
    )
    assert updated.rowcount == 0
    assert probe_a.execute("SELECT * FROM pgmsg_claim('rls-probe-b', 10)").fetchall() == []
    [mine] = probe_a.execute("SELECT * FROM pgmsg_claim('rls-probe-a', 10)").fetchall()
    assert mine["payload"] == {"secret": "for both"}
    assert (
        probe_a.execute(
            "SELECT acked AS n FROM pgmsg_ack(%s, %s)", ([mine["delivery_id"]], [mine["lease_token"]])
        ).fetchone()["n"]
        == 1
    )
    probe_b = login("rls_probe_b")
    [theirs] = probe_b.execute(
        "SELECT status FROM message_delivery WHERE message_id = %s", (two_clients,)
    ).fetchall()
    assert theirs["status"] == "pending"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        probe_b.execute("INSERT INTO messages (message_type) VALUES ('x.forged')")


def test_publisher_can_publish_but_not_read(login, two_clients: int, run_id: str) -> None:  # type: ignore[no-untyped-def]
    publisher = login("pgmsg_publisher_local")
    row = publisher.execute(
        "INSERT INTO messages (message_type, payload) VALUES (%s, '{}') RETURNING id", (run_id + ".pub",)
    ).fetchone()
    assert row["id"] > two_clients
    for query in (
        "SELECT * FROM message_delivery",
        "SELECT payload FROM messages",
        "SELECT * FROM subscriptions",
        "SELECT * FROM delivery_attempts",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            publisher.execute(query)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        publisher.execute("UPDATE message_delivery SET status = 'delivered'")


def test_admin_sees_everything_and_roles_cannot_change_the_allowlist(login, two_clients: int) -> None:  # type: ignore[no-untyped-def]
    admin = login("pgmsg_ops")
    rows = admin.execute(
        "SELECT client_id FROM message_delivery WHERE message_id = %s ORDER BY client_id", (two_clients,)
    ).fetchall()
    assert [r["client_id"] for r in rows] == ["rls-probe-a", "rls-probe-b"]
    for name in ("pgmsg_ops", "rls_probe_a", "pgmsg_publisher_local"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            login(name).execute("SELECT pgmsg_set_webhook_allowlist(ARRAY['0.0.0.0/0'])")


# -- least privilege, from the attacker's side (issue 15: 1, 7, 12, 13) ---------


def test_no_login_role_can_make_http_requests_from_the_database(
    login, inventory_vars: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    """pgsql-http is the in-transaction push's alone: nobody else reaches the network past the allowlist."""
    for name in login_passwords(inventory_vars):
        conn = login(name)
        for attack in (
            "SELECT status FROM http_get('http://127.0.0.2:9/')",
            "SELECT http_set_curlopt('CURLOPT_TIMEOUT_MS', '1')",
            "SELECT http_reset_curlopt()",
            "SELECT status FROM http(('GET', 'http://127.0.0.2:9/', NULL, NULL, NULL)::http_request)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(attack)


def test_no_login_role_can_schedule_cron_jobs(login, inventory_vars: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    for name in login_passwords(inventory_vars):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            login(name).execute("SELECT cron.schedule('pgmsg-attack', '* * * * *', 'SELECT 1')")


@pytest.fixture
def probe_a_webhook(db: psycopg.Connection[Any], run_id: str) -> Iterator[dict[str, Any]]:
    """An http subscription of rls-probe-a, with a known current and previous secret."""
    row = db.execute(
        "INSERT INTO subscriptions (client_id, delivery_mode, message_type, webhook_url) "
        "VALUES ('rls-probe-a', 'http', %s, 'http://127.0.0.1:9/hook') RETURNING id, signing_secret",
        (run_id + ".secret",),
    ).fetchone()
    db.execute("SELECT pgmsg_rotate_secret(%s)", (row["id"],))
    yield row
    db.execute("DELETE FROM subscriptions WHERE id = %s", (row["id"],))


@pytest.mark.parametrize("column", ["signing_secret", "previous_signing_secret"])
def test_signing_secrets_are_hidden_from_monitoring_admins_publishers_and_other_clients(  # type: ignore[no-untyped-def]
    login, probe_a_webhook: dict[str, Any], column: str
) -> None:
    for name in ("pgmsg_exporter_local", "pgmsg_ops", "pgmsg_publisher_local"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            login(name).execute(f"SELECT {column} FROM subscriptions")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            login(name).execute(f"SELECT count(*) FROM subscriptions WHERE {column} LIKE 'whsec_%%'")
    # Another client has the column, but not the row.
    assert (
        login("rls_probe_b")
        .execute(f"SELECT {column} FROM subscriptions WHERE id = %s", (probe_a_webhook["id"],))
        .fetchall()
        == []
    )
    # The owner and the dispatcher (which signs with it) read it.
    for name in ("rls_probe_a", "pgmsg_dispatcher_local"):
        [row] = (
            login(name)
            .execute(f"SELECT {column} FROM subscriptions WHERE id = %s", (probe_a_webhook["id"],))
            .fetchall()
        )
        assert row[column].startswith("whsec_")


def test_monitoring_and_admins_still_read_everything_but_the_secrets(
    login, probe_a_webhook: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    for name in ("pgmsg_exporter_local", "pgmsg_ops"):
        [row] = (
            login(name)
            .execute(
                "SELECT client_id, webhook_url, active, previous_secret_expires_at "
                "FROM subscriptions WHERE id = %s",
                (probe_a_webhook["id"],),
            )
            .fetchall()
        )
        assert row["client_id"] == "rls-probe-a" and row["previous_secret_expires_at"] is not None


def test_an_administrator_sees_a_secret_once_when_it_is_set(
    dsn: str,
    inventory_vars: dict[str, Any],  # type: ignore[no-untyped-def]
    db: psycopg.Connection[Any],
    run_id: str,
) -> None:
    with Client(role_dsn(dsn, "pgmsg_ops", login_passwords(inventory_vars)["pgmsg_ops"])) as admin:
        created = admin.subscribe(run_id + "-adm", "http", webhook_url="http://127.0.0.1:9/hook")
        stored = db.execute(
            "SELECT signing_secret FROM subscriptions WHERE id = %s", (created.id,)
        ).fetchone()
        assert created.signing_secret is not None and created.signing_secret == stored["signing_secret"]
        # Subscribing again updates it and keeps the secret, without showing it.
        again = admin.subscribe(run_id + "-adm", "http", webhook_url="http://127.0.0.1:9/other")
        assert again.id == created.id and again.signing_secret is None
        given = "whsec_" + "QUJD" * 11
        assert (
            admin.subscribe(
                run_id + "-adm", "http", webhook_url="http://127.0.0.1:9/other", signing_secret=given
            ).signing_secret
            == given
        )
        rotated = admin.rotate_secret(created.id, overlap_seconds=60)
        stored = db.execute(
            "SELECT signing_secret, previous_signing_secret FROM subscriptions WHERE id = %s", (created.id,)
        ).fetchone()
        assert (rotated, given) == (stored["signing_secret"], stored["previous_signing_secret"])
        [listed] = admin.subscriptions(run_id + "-adm")
        assert listed.webhook_url == "http://127.0.0.1:9/other" and listed.signing_secret is None
        with pytest.raises(PgmsgError, match="permission denied"):
            admin.subscriptions(run_id + "-adm", with_secrets=True)


def test_only_the_deployment_writes_the_allowlist(login, db: psycopg.Connection[Any]) -> None:  # type: ignore[no-untyped-def]
    before = db.execute(
        "SELECT array_agg(entry ORDER BY entry) AS e FROM pgmsg_webhook_allowlist"
    ).fetchone()["e"]
    admin = login("pgmsg_ops")
    for attack in (
        "INSERT INTO pgmsg_webhook_allowlist (entry, network) VALUES ('0.0.0.0/0', '0.0.0.0/0')",
        "UPDATE pgmsg_webhook_allowlist SET network = '0.0.0.0/0' WHERE network IS NOT NULL",
        "DELETE FROM pgmsg_webhook_allowlist",
        "TRUNCATE pgmsg_webhook_allowlist",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            admin.execute(attack)
    assert (
        db.execute("SELECT array_agg(entry ORDER BY entry) AS e FROM pgmsg_webhook_allowlist").fetchone()["e"]
        == before
    )
    # The dispatcher loads it.
    assert login("pgmsg_dispatcher_local").execute(
        "SELECT count(*) AS n FROM pgmsg_webhook_allowlist"
    ).fetchone()["n"] == len(before)


@pytest.mark.parametrize("table", ["messages", "message_inbox"])
@pytest.mark.parametrize(
    "column, value", [("id", 2_000_000_000), ("created_at", "2001-01-01"), ("published_by", "pgmsg_ops")]
)
def test_publishers_cannot_choose_ids_times_or_authors(
    login,
    run_id: str,
    table: str,
    column: str,  # type: ignore[no-untyped-def]
    value: object,
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        login("pgmsg_publisher_local").execute(
            f"INSERT INTO {table} (message_type, {column}) VALUES (%s, %s)", (run_id + ".forged", value)
        )


def test_publishing_as_a_publisher_still_works(
    dsn: str,
    inventory_vars: dict[str, Any],  # type: ignore[no-untyped-def]
    db: psycopg.Connection[Any],
    run_id: str,
) -> None:
    with Client(
        role_dsn(dsn, "pgmsg_publisher_local", login_passwords(inventory_vars)["pgmsg_publisher_local"])
    ) as publisher:
        ids = [
            publisher.publish(run_id + ".p", {"n": 1}, key="k"),
            *publisher.publish_many([(run_id + ".p", {"n": 2}, "shop")]),
            publisher.publish(run_id + ".p", {"n": 3}, deferred=True),
            *publisher.publish_many([(run_id + ".p", {"n": 4}, "shop")], deferred=True),
        ]
    assert len(set(ids)) == 4

    def fanned_out() -> list[Any]:
        # The deployed fan-out worker may be moving these rows right now (it holds the fan-out lock, so
        # this call then moves nothing): wait until every deferred message has reached `messages`.
        db.execute("SELECT pgmsg_fan_out_deferred(100000)")
        found = db.execute(
            "SELECT id, published_by FROM messages WHERE id = ANY (%s) ORDER BY id", (ids,)
        ).fetchall()
        return found if len(found) == len(ids) else []

    rows = wait_until(fanned_out, message="the deferred messages were not fanned out")
    assert [(r["id"], r["published_by"]) for r in rows] == [(i, "pgmsg_publisher_local") for i in sorted(ids)]


def test_a_role_learns_only_its_own_client_ids(login) -> None:  # type: ignore[no-untyped-def]
    probe_a = login("rls_probe_a")
    assert probe_a.execute("SELECT array_agg(c) AS ids FROM pgmsg_client_ids_of('rls_probe_a') c").fetchone()[
        "ids"
    ] == ["rls-probe-a"]
    for other in ("rls_probe_b", "analytics_service", "pgmsg_publisher_local"):
        assert (
            probe_a.execute("SELECT count(*) AS n FROM pgmsg_client_ids_of(%s)", (other,)).fetchone()["n"]
            == 0
        )
    for name in ("pgmsg_publisher_local", "pgmsg_exporter_local", "pgmsg_dispatcher_local"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            login(name).execute("SELECT * FROM pgmsg_client_ids_of('rls_probe_a')")


def test_a_publisher_gets_delivery_stats_of_its_own_messages_only(
    login, two_clients: int, run_id: str
) -> None:  # type: ignore[no-untyped-def]
    publisher = login("pgmsg_publisher_local")
    # two_clients was published by the superuser, to two subscriptions.
    assert publisher.execute("SELECT * FROM pgmsg_delivery_stats(%s)", ([two_clients],)).fetchall() == []
    mine = publisher.execute(
        "INSERT INTO messages (message_type) VALUES (%s) RETURNING id", (run_id + ".rls",)
    ).fetchone()["id"]
    stats = publisher.execute(
        "SELECT delivery_mode, status, count FROM pgmsg_delivery_stats(%s)", ([mine, two_clients],)
    ).fetchall()
    assert stats == [{"delivery_mode": "async", "status": "pending", "count": 2}]
    # Monitoring and administrators see any message's.
    for name in ("pgmsg_exporter_local", "pgmsg_ops"):
        [row] = login(name).execute("SELECT count FROM pgmsg_delivery_stats(%s)", ([two_clients],)).fetchall()
        assert row["count"] == 2


def test_the_exporter_queries_run_as_the_monitoring_login(login) -> None:  # type: ignore[no-untyped-def]
    """Every query of pgmsg-sql-exporter's collector file, with each metric's columns."""
    template = (ROOT / "roles" / "postgres_exporter" / "templates" / "pgmsg_metrics.yml.j2").read_text()
    rendered = jinja2.Template(template).render(
        ansible_managed="test", postgres_exporter_scan_cache_seconds=30
    )
    queries = yaml.safe_load(rendered)["queries"]
    assert queries
    exporter = login("pgmsg_exporter_local")
    for spec in queries:
        try:
            cursor = exporter.execute(spec["query"])
            cursor.fetchall()
        except psycopg.Error as exc:
            pytest.fail(f"exporter query {spec['name']} fails as pgmsg_exporter_local: {exc}")
        columns = {c.name for c in cursor.description or []}
        for metric in spec["metrics"]:
            wanted = {metric["value"], *metric.get("key_labels", [])}
            assert wanted <= columns, (
                f"{metric['metric_name']}: no column {wanted - columns} in {spec['name']}"
            )


def test_the_dispatcher_can_still_deactivate_a_gone_endpoint(login, probe_a_webhook: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    """Its UPDATE runs the subscription triggers (URL check, secret) in its name."""
    dispatcher = login("pgmsg_dispatcher_local")
    dispatcher.execute(
        "UPDATE subscriptions SET active = false, deactivated_reason = 'endpoint answered 410' WHERE id = %s",
        (probe_a_webhook["id"],),
    )
    assert (
        login("pgmsg_ops")
        .execute("SELECT active FROM subscriptions WHERE id = %s", (probe_a_webhook["id"],))
        .fetchone()["active"]
        is False
    )
