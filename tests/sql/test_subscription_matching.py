"""Which subscriptions a message reaches, found through an index (031): a publish costs what
its matching subscriptions cost, not what all of them cost.

Runs on the module's own scratch server (its subscriptions are this module's alone: a
fan-out to every other test's subscriptions would change what is measured and matched).
The reference for "matches" is written here, independently of the SQL: a pattern's ``*``
stands for any run of characters, including none, and every other character for itself.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from pgmsg import Client
from tests.sql.test_throughput_plans import nested_plans
from tests.support.scratch import ScratchServer


@pytest.fixture(scope="module")
def scratch(scratch_server: ScratchServer) -> str:
    return scratch_server.dsn


def matches(pattern: str, value: str) -> bool:
    """The reference: ``*`` is any run of characters, everything else is literal."""
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), value) is not None


def reset(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE messages, message_delivery, subscriptions")


def subscribe_many(conn: psycopg.Connection[Any], rows: list[tuple[str, str, str]]) -> None:
    """(client_id, message_type pattern, namespace pattern) rows, all async."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO subscriptions (client_id, delivery_mode, message_type, namespace) "
            "VALUES (%s, 'async', %s, %s)",
            rows,
        )


def reached(conn: psycopg.Connection[Any], message_ids: list[int]) -> set[tuple[int, str]]:
    rows = conn.execute(
        "SELECT message_id, client_id FROM message_delivery WHERE message_id = ANY(%s)", (message_ids,)
    ).fetchall()
    return {(r["message_id"], r["client_id"]) for r in rows}


# Few letters, so that prefixes, suffixes and whole types collide often; '_' and '.' are
# literal in a pattern (LIKE would read '_' as any character).
_text = st.text(alphabet="ab._", min_size=0, max_size=5)
_type = st.text(alphabet="ab._", min_size=0, max_size=6).map(lambda s: "t" + s)
_pattern = st.lists(_text, min_size=1, max_size=3).map("*".join).map(lambda s: s if s else "*")
_type_pattern = st.one_of(_type, _pattern.map(lambda p: p if p.startswith("*") else "t" + p))
_namespace = st.sampled_from(["default", "shop", "shop.eu", "billing"])
_namespace_pattern = st.sampled_from(["*", "default", "shop*", "*eu", "s*p", "billing", "*o*"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    subscriptions=st.lists(st.tuples(_type_pattern, _namespace_pattern), min_size=1, max_size=12),
    messages=st.lists(st.tuples(_type, _namespace), min_size=1, max_size=8),
)
def test_every_matching_subscription_and_no_other_is_reached(
    scratch: str, subscriptions: list[tuple[str, str]], messages: list[tuple[str, str]]
) -> None:
    """Singly and in one batch, a message reaches exactly the subscriptions the reference
    says it matches: exact types, prefixes, suffixes, infixes, '*' alone, namespaces alike."""
    with (
        psycopg.connect(scratch, autocommit=True, row_factory=dict_row) as conn,
        Client(scratch, max_size=1) as client,
    ):
        reset(conn)
        subscribers = [(f"c{i}", t, ns) for i, (t, ns) in enumerate(subscriptions)]
        subscribe_many(conn, subscribers)
        single = [client.publish(t, {"n": i}, ns) for i, (t, ns) in enumerate(messages)]
        batch = client.publish_many([(t, {"n": i}, ns) for i, (t, ns) in enumerate(messages)])
        for ids in (single, batch):
            expected = {
                (message_id, client_id)
                for message_id, (message_type, namespace) in zip(ids, messages, strict=True)
                for client_id, type_pattern, namespace_pattern in subscribers
                if matches(type_pattern, message_type) and matches(namespace_pattern, namespace)
            }
            assert reached(conn, ids) == expected


def test_changed_and_deactivated_subscriptions_are_matched_as_they_are_now(scratch: str) -> None:
    """The index follows every change of a subscription: a new pattern, a pause, a resume."""
    with (
        psycopg.connect(scratch, autocommit=True, row_factory=dict_row) as conn,
        Client(scratch, max_size=1) as client,
    ):
        reset(conn)
        subscribe_many(conn, [("changer", "order.created", "*")])
        first = client.publish("order.created", {})
        conn.execute("UPDATE subscriptions SET message_type = 'invoice.*' WHERE client_id = 'changer'")
        second = client.publish("order.created", {})
        third = client.publish("invoice.paid", {})
        conn.execute("UPDATE subscriptions SET active = false WHERE client_id = 'changer'")
        fourth = client.publish("invoice.paid", {})
        conn.execute("UPDATE subscriptions SET active = true WHERE client_id = 'changer'")
        fifth = client.publish("invoice.paid", {})
        got = reached(conn, [first, second, third, fourth, fifth])
        assert got == {(first, "changer"), (third, "changer"), (fifth, "changer")}


def many_others(conn: psycopg.Connection[Any], count: int) -> None:
    """``count`` subscriptions that do not match 'shop.order.created': exact types and
    patterns with a literal prefix, as one webhook per customer gives."""
    conn.execute(
        "INSERT INTO subscriptions (client_id, delivery_mode, message_type, namespace) "
        "SELECT 'cust-' || g, 'async', "
        "       CASE WHEN g %% 2 = 0 THEN 'cust' || g || '.order.created' ELSE 'cust' || g || '.*' END, "
        "       CASE WHEN g %% 10 = 0 THEN 'tenant-' || g ELSE '*' END "
        "  FROM generate_series(1, %s) AS g",
        (count,),
    )
    conn.execute("ANALYZE subscriptions")


@pytest.mark.parametrize("form", ["single", "batch"])
def test_ten_thousand_other_subscriptions_are_not_read(scratch: str, form: str) -> None:
    """With 10,000 subscriptions that cannot match, a publish reads subscriptions through the
    match index and looks at the few whose literal prefix fits, not at every one (before 031
    each publish compared the message with all of them: 1,000 cut the batch rate tenfold)."""
    with psycopg.connect(scratch, autocommit=True, row_factory=dict_row) as conn:
        reset(conn)
        subscribe_many(conn, [(f"wanted-{i}", "shop.order.*", "*") for i in range(3)])
        many_others(conn, 10_000)
        insert = (
            "INSERT INTO messages (message_type, payload) VALUES ('shop.order.created', '{}') RETURNING id"
            if form == "single"
            else "INSERT INTO messages (message_type, payload) "
            "SELECT 'shop.order.created', jsonb_build_object('n', g) FROM generate_series(1, 200) g RETURNING id"
        )
        for _ in range(6):  # past PL/pgSQL's custom plans, to the plan it keeps
            conn.execute(insert).fetchall()
        plans = nested_plans(conn, insert)
        assert "subscriptions_match_idx" in plans, plans
        assert "Seq Scan on subscriptions" not in plans, plans
        rows = conn.execute(
            "SELECT count(*) AS n FROM message_delivery WHERE client_id LIKE 'cust-%'"
        ).fetchone()
        assert rows["n"] == 0
        wanted = conn.execute(
            "SELECT count(DISTINCT client_id) AS n FROM message_delivery WHERE client_id LIKE 'wanted-%'"
        ).fetchone()
        assert wanted["n"] == 3
