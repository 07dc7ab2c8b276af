"""What the benchmarks changed, held in place: claims stay on the claim index
whatever the statistics say (009), a publish wakes the HTTP dispatcher only
when it is not already pushing to that subscription (011), and a retention batch
reads deliveries through indexes only (024).

These run on a scratch server from the deployed image, migrated from scratch,
where the statistics and the deliveries are this test's alone (on the shared
deployed database other tests' history would decide the plan)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgmsg import Client
from tests.support.scratch import ScratchServer


@pytest.fixture(scope="module")
def scratch(scratch_server: ScratchServer) -> str:
    """The module's own migrated server: what it measures or moves is its alone."""
    return scratch_server.dsn


def logged_plans(conn: psycopg.Connection[Any], statement: str, params: Any = None) -> list[tuple[str, str]]:
    """(plan, context) of every statement ``statement`` runs, functions included (auto_explain);
    the context names the function a nested statement ran in, and is empty for ``statement``."""
    plans: list[tuple[str, str]] = []
    conn.add_notice_handler(lambda diag: plans.append((diag.message_primary or "", diag.context or "")))
    conn.execute("LOAD 'auto_explain'")
    for setting in (
        "log_min_duration = 0",
        "log_nested_statements = on",
        "log_analyze = on",
        "log_level = notice",
    ):
        conn.execute(f"SET auto_explain.{setting}")
    conn.execute(statement, params).fetchall()
    conn.execute("SET auto_explain.log_min_duration = -1")
    return plans


def nested_plans(conn: psycopg.Connection[Any], statement: str, params: Any = None) -> str:
    """The plans of every statement ``statement`` runs, functions included (auto_explain)."""
    return "\n".join(plan for plan, _ in logged_plans(conn, statement, params))


def test_claim_uses_the_claim_index_when_statistics_say_all_is_pending(scratch: str) -> None:
    """ANALYZE during a backlog: the primary key and the claim index then cost the same to
    the planner, and the plain `client_id = $1 ORDER BY id` walked the primary key past
    every delivered row. The claim must read the claim index, and only pending rows."""
    with Client(scratch, max_size=1) as client:
        client.subscribe("plan-consumer", "async", message_type="plan.work")
        for _ in range(3):
            client.publish_many([("plan.work", {"n": i}, "default") for i in range(1000)])
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE message_delivery")
        for _ in range(10):  # a third consumed after the statistics were taken
            client.ack(d for d in client.claim("plan-consumer", 100))
    with psycopg.connect(scratch, autocommit=True) as conn:
        plans = nested_plans(conn, "SELECT * FROM pgmsg_claim('plan-consumer', 100)")
        assert (
            conn.execute("SELECT count(*) FROM message_delivery WHERE status = 'processing'").fetchone()[0]
            == 100
        )
    assert "Index Scan using message_delivery_claim_idx" in plans, plans
    assert "Index Scan using message_delivery_pkey on message_delivery d_" not in plans, plans
    assert "Seq Scan on message_delivery" not in plans, plans


def test_claim_waits_for_the_flush_unless_told_not_to(scratch: str) -> None:
    """p_durable => false turns synchronous_commit off for the claim's transaction only."""
    with Client(scratch, max_size=1) as client:
        client.subscribe("flush-consumer", "async", message_type="flush.work")
        client.publish_many([("flush.work", {}, "default")] * 2)
    with psycopg.connect(scratch, autocommit=True) as conn:
        # Without parameters psycopg sends one simple query: one implicit transaction.
        cur = conn.execute(
            "SELECT count(*) FROM pgmsg_claim('flush-consumer', 1, NULL, NULL, false); "
            "SHOW synchronous_commit"
        )
        assert cur.fetchone() == (1,) and cur.nextset() and cur.fetchone() == ("off",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)  # the next transaction
        cur = conn.execute("SELECT count(*) FROM pgmsg_claim('flush-consumer', 1); SHOW synchronous_commit")
        assert cur.fetchone() == (1,) and cur.nextset() and cur.fetchone() == ("on",)
        with conn.transaction():
            conn.execute("SELECT * FROM pgmsg_claim('flush-consumer', 1, NULL, NULL, true)").fetchall()
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)


def http_wakeups(dsn: str, publisher: Client, count: int) -> int:
    """Publish ``count`` messages to the http subscription; how many NOTIFY pgmsg_http arrived."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgmsg_http")
        for _ in range(count):
            publisher.publish("wake.hook", {})
        return len(list(listener.notifies(timeout=0.5)))


def test_publish_wakes_the_dispatcher_only_when_it_is_not_pushing_there(scratch: str) -> None:
    with (
        psycopg.connect(scratch, autocommit=True, row_factory=dict_row) as conn,
        Client(scratch, max_size=1) as client,
    ):
        client.subscribe("wake-hook", "http", message_type="wake.hook", webhook_url="http://127.0.0.1:9/hook")
        assert http_wakeups(scratch, client, 3) == 3  # idle: every publish announces work

        # A dispatcher claims one (a live lease): further publishes announce nothing.
        [claimed] = conn.execute(
            "SELECT * FROM pgmsg_claim_http_slots(1, 1, 'probe', 60, '{}', '{}')"
        ).fetchall()
        assert http_wakeups(scratch, client, 3) == 0

        # Its lease lapses (the dispatcher died): publishes announce work again.
        conn.execute(
            "UPDATE message_delivery SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            (claimed["delivery_id"],),
        )
        assert http_wakeups(scratch, client, 2) == 2

        # Pushed and recorded: nothing in flight, announced again.
        conn.execute(
            "UPDATE message_delivery SET lease_expires_at = now() + interval '60 seconds' WHERE id = %s",
            (claimed["delivery_id"],),
        )
        assert http_wakeups(scratch, client, 1) == 0
        conn.execute(
            "SELECT pgmsg_record_http_attempt(%s, %s, 200, NULL, 1.0, NULL)",
            (claimed["delivery_id"], claimed["lease_token"]),
        )
        assert http_wakeups(scratch, client, 2) == 2


def test_dispatcher_claim_reads_only_http_deliveries_being_pushed(scratch: str) -> None:
    """Each dispatcher claim first turns lapsed last-attempt leases into dead letters. That
    pass has its own index now (012): with some statistics (seen in the bench after a
    TRUNCATE) it had read message_delivery sequentially on every claim. And the webhook id
    is computed inline, no longer as a statement of its own per claimed row."""
    with (
        psycopg.connect(scratch, autocommit=True, row_factory=dict_row) as conn,
        Client(scratch, max_size=1) as client,
    ):
        client.subscribe(
            "lease-hook",
            "http",
            message_type="lease.hook",
            webhook_url="http://127.0.0.1:9/hook",
            max_attempts=1,
        )
        client.subscribe("lease-async", "async", message_type="lease.hook")
        client.publish_many([("lease.hook", {"n": i}, "default") for i in range(200)])
        conn.execute(
            "UPDATE subscriptions SET active = false WHERE delivery_mode = 'http' "
            "AND client_id <> 'lease-hook'"
        )  # other tests' webhooks: not claimed here
        conn.execute("ANALYZE message_delivery")
        [doomed] = conn.execute(
            "SELECT * FROM pgmsg_claim_http_slots(1, 1, 'doomed', 60, '{}', '{}')"
        ).fetchall()
        # Its dispatcher died mid-request on the last allowed attempt; an async lease lapsed too.
        conn.execute(
            "UPDATE message_delivery SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            (doomed["delivery_id"],),
        )
        [async_one] = client.claim("lease-async", 1)
        conn.execute(
            "UPDATE message_delivery SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            (async_one.id,),
        )
        plans = nested_plans(conn, "SELECT * FROM pgmsg_claim_http_slots(5, 5, 'next', 60, '{}', '{}')")
        dead = conn.execute(
            "SELECT id, status, last_error FROM message_delivery WHERE status = 'dead'"
        ).fetchall()
        assert [(d["id"], d["last_error"]) for d in dead] == [
            (doomed["delivery_id"], "dispatcher lease expired on the last attempt")
        ]
        assert (
            conn.execute("SELECT status FROM message_delivery WHERE id = %s", (async_one.id,)).fetchone()[
                "status"
            ]
            == "processing"
        )  # not the dispatcher's
    assert "Index Scan using message_delivery_http_lease_idx" in plans, plans
    assert "Seq Scan on message_delivery" not in plans, plans
    # The webhook id is inlined into the claim, not run as a statement of its own per row.
    assert "SELECT 'dlv_'" not in plans, plans


def test_claims_are_not_planned_again_on_every_call(scratch: str) -> None:
    """Statistics from one client's backlog made a custom plan look far cheaper for a client
    with a few deliveries, so PL/pgSQL planned every claim again (1.5 ms each). 013 keeps a
    generic plan: the logged plans show the parameter ($1), not the client id, from the first
    call on; and the ack is PL/pgSQL now, whose plans are kept, not planned on every call."""
    with Client(scratch, max_size=1) as client:
        client.subscribe("skew-busy", "async", message_type="skew.busy")
        client.subscribe("skew-idle", "async", message_type="skew.idle")
        client.publish_many([("skew.busy", {"n": i}, "default") for i in range(2000)])
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("ANALYZE message_delivery")
        client.publish_many([("skew.idle", {"n": i}, "default") for i in range(8)])
    with psycopg.connect(scratch, autocommit=True) as conn:
        plans = [nested_plans(conn, "SELECT * FROM pgmsg_claim('skew-idle', 1)") for _ in range(8)]
        acked = conn.execute(
            "SELECT acked FROM pgmsg_ack(ARRAY(SELECT id FROM message_delivery "
            "WHERE client_id = 'skew-idle' AND status = 'processing' ORDER BY id), "
            "ARRAY(SELECT lease_token FROM message_delivery "
            "WHERE client_id = 'skew-idle' AND status = 'processing' ORDER BY id))"
        ).fetchone()[0]
    assert acked == 8
    for plan in plans:  # a custom plan has the value folded in: '{skew-idle}'::text[]
        assert "ANY (ARRAY[$1])" in plan and "{skew-idle}" not in plan and "'skew-idle'::text" not in plan, (
            plan
        )


def test_ack_and_nack_read_the_primary_key_whatever_the_lease_index_holds(scratch: str) -> None:
    """Statistics taken with nothing being processed make the lease index (deliveries being
    processed) look empty, and the ack's `status = 'processing' OR ...` then read all of it in
    a bitmap scan: every version a claim ever made there until vacuum, which is never killed
    by a bitmap scan (bench "7. Growth": an ack of 100 read 2,600 buffers after 30,000
    claims, and each round took longer). 014: ack and nack find their deliveries by id."""
    with psycopg.connect(scratch, autocommit=True) as conn:
        # This test's statistics alone: earlier tests' deliveries gone, no autoanalyze midway.
        conn.execute("TRUNCATE delivery_attempts, message_delivery, messages, subscriptions CASCADE")
        conn.execute("ALTER TABLE message_delivery SET (autovacuum_enabled = false)")
    with Client(scratch, max_size=1) as client:
        client.subscribe("ack-plan", "async", message_type="ackplan.work")
        client.publish_many([("ackplan.work", {"n": i}, "default") for i in range(2000)])
        while claimed := client.claim("ack-plan", 100):  # history: all delivered
            client.ack(d for d in claimed)
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE message_delivery")  # nothing pending or being processed
        client.publish_many([("ackplan.work", {"n": i}, "default") for i in range(2000)])
        for _ in range(15):  # 1,500 dead 'processing' versions in the lease index
            client.ack(d for d in client.claim("ack-plan", 100))
        claimed = client.claim("ack-plan", 100)
    ids = "{" + ",".join(str(d.id) for d in claimed) + "}"
    tokens = "{" + ",".join(str(d.lease_token) for d in claimed) + "}"
    with psycopg.connect(scratch, autocommit=True) as conn:
        # The trap is set: the conditions as 013 wrote them, planned generically, read the lease index.
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(
            "PREPARE old_ack(bigint[]) AS UPDATE message_delivery SET status = 'delivered' "
            "WHERE id = ANY ($1) AND (status = 'processing' OR status = 'pending' AND delivery_mode = 'notify')"
        )
        conn.execute(
            "PREPARE old_nack(bigint) AS UPDATE message_delivery SET status = 'pending' "
            "WHERE id = $1 AND status = 'processing'"
        )
        for old in (f"old_ack('{ids}')", f"old_nack({claimed[0].id})"):
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN EXECUTE {old}").fetchall())
            assert "message_delivery_lease_idx" in plan, plan
        conn.execute("RESET plan_cache_mode")
        nacked = nested_plans(
            conn, f"SELECT pgmsg_nack({claimed[0].id}, '{claimed[0].lease_token}', 0, 'try again')"
        )
        acked = nested_plans(conn, f"SELECT * FROM pgmsg_ack('{ids}'::bigint[], '{tokens}'::uuid[])")
        statuses = dict(
            conn.execute(
                "SELECT status, count(*) FROM message_delivery WHERE client_id = 'ack-plan' GROUP BY status"
            ).fetchall()
        )
    assert statuses == {"delivered": 3599, "pending": 401}
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("ALTER TABLE message_delivery RESET (autovacuum_enabled)")
    for plans in (acked, nacked):
        assert "message_delivery_pkey" in plans, plans
        assert "message_delivery_lease_idx" not in plans and "Seq Scan on message_delivery" not in plans, (
            plans
        )


@pytest.mark.parametrize("retire", ["pgmsg_archive_messages", "pgmsg_expire_messages"])
def test_retention_reads_deliveries_through_the_message_index(scratch: str, retire: str) -> None:
    """A retention batch must cost the same however many deliveries the system holds: 022's
    archive read the whole of message_delivery three times a batch (its open-delivery check,
    its re-check and 008's delete trigger, all planned as scans because few deliveries are
    open), so a backlog of millions could not be retired. Every read of it must go through
    an index."""
    with Client(scratch, max_size=1) as client:
        for n in range(2):
            client.subscribe(f"plan-retire-{n}", "async", message_type="plan.retire")
        for _ in range(5):
            client.publish_many([("plan.retire", {"n": i}, "default") for i in range(1000)])
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute(
            "UPDATE messages SET created_at = now() - interval '400 days' WHERE message_type = 'plan.retire'"
        )
        conn.execute(
            "UPDATE message_delivery SET status = 'delivered', delivered_at = now() "
            "WHERE client_id LIKE 'plan-retire-%'"
        )
        conn.execute("VACUUM ANALYZE messages, message_delivery")
        # A batch small beside the table (1 %), as a real backlog is: a scan would be the wrong plan.
        plans = nested_plans(conn, f"SELECT {retire}(interval '30 days', 50)")
        conn.execute("DELETE FROM messages WHERE message_type = 'plan.retire'")
        conn.execute("DELETE FROM subscriptions WHERE client_id LIKE 'plan-retire-%'")
    assert "message_delivery" in plans, plans
    assert "Seq Scan on message_delivery" not in plans, plans


def test_recording_a_large_batch_of_pushes_is_linear(scratch: str) -> None:
    """The recorder writes whatever finished meanwhile in one call (up to 500 pushes). The
    generic plan guessed one row per array and joined by nested loops, comparing every push
    with every other twice (032): the plans may not filter joined rows by the batch squared."""
    with Client(scratch, max_size=1) as client, psycopg.connect(scratch, autocommit=True) as conn:
        client.subscribe(
            "batch-hook", "http", message_type="batch.hook", webhook_url="http://127.0.0.1:9/hook"
        )
        client.publish_many([("batch.hook", {"n": i}, "default") for i in range(400)])
        conn.execute(
            "UPDATE subscriptions SET active = false WHERE delivery_mode = 'http' AND client_id <> 'batch-hook'"
        )  # other tests' webhooks: not claimed here
        rows = conn.execute(
            "SELECT delivery_id, lease_token FROM pgmsg_claim_http_slots(400, 400, 'batch', 60, '{}', '{}')"
        ).fetchall()
        assert len(rows) == 400
        ids, tokens = [r[0] for r in rows], [r[1] for r in rows]
        codes = [200] * 300 + [503] * 100
        plans = nested_plans(
            conn,
            "SELECT * FROM pgmsg_record_http_attempts(%s::bigint[], %s::uuid[], %s::integer[], %s::text[],"
            " %s::numeric[], %s::float8[])",
            (ids, tokens, codes, [None] * 400, [1.0] * 400, [None] * 400),
        )
        statuses = conn.execute(
            "SELECT status, count(*) FROM message_delivery WHERE id = ANY(%s) GROUP BY status ORDER BY status",
            (ids,),
        ).fetchall()
        assert statuses == [("delivered", 300), ("pending", 100)]
    removed = [int(n) for n in re.findall(r"Rows Removed by Join Filter: (\d+)", plans)]
    assert max(removed, default=0) < 400, plans


#: The functions every publish, claim, ack and push runs (034).
HOT_PATH = (
    "pgmsg_fan_out",
    "pgmsg_fan_out_deferred",
    "pgmsg_claim",
    "pgmsg_ack",
    "pgmsg_nack",
    "pgmsg_claim_http_slots",
    "pgmsg_record_http_attempt",
    "pgmsg_record_http_attempts",
)


def test_hot_path_functions_are_never_jit_compiled(scratch: str) -> None:
    """A generic plan cannot know the claim's limit, so its estimated cost grows with the
    backlog; past jit_above_cost every claim compiled its plan again (60 ms and more, where the
    claim takes 5), and consumers slowed down as their backlog grew (034). Here the session
    asks for JIT on every statement: the statements it runs itself are compiled, and none that
    the hot-path functions run is, whatever the session says."""
    with (
        Client(scratch, max_size=1) as client,
        psycopg.connect(scratch, autocommit=True, row_factory=dict_row) as conn,
    ):
        assert conn.execute("SELECT pg_jit_available() AS ok").fetchone()["ok"], (
            "this server cannot JIT-compile, so the test cannot show that the functions do not"
        )
        client.subscribe("jit-consumer", "async", message_type="jit.work")
        client.subscribe("jit-hook", "http", message_type="jit.hook", webhook_url="http://127.0.0.1:9/hook")
        conn.execute(
            "UPDATE subscriptions SET active = false WHERE delivery_mode = 'http' AND client_id <> 'jit-hook'"
        )  # other tests' webhooks: not claimed here
        for setting in (
            "jit = on",
            "jit_above_cost = 0",
            "jit_inline_above_cost = 0",
            "jit_optimize_above_cost = 0",
        ):
            conn.execute(f"SET {setting}")
        plans = logged_plans(
            conn,
            "INSERT INTO messages (message_type, namespace, payload) "
            "SELECT t, 'default', '{}' FROM unnest(ARRAY['jit.work', 'jit.work', 'jit.hook', 'jit.hook']) AS t "
            "RETURNING id",
        )
        plans += logged_plans(conn, "SELECT * FROM pgmsg_claim('jit-consumer', 2)")
        held = conn.execute(
            "SELECT id, lease_token FROM message_delivery WHERE client_id = 'jit-consumer' ORDER BY id"
        ).fetchall()
        plans += logged_plans(
            conn, "SELECT * FROM pgmsg_ack(%s, %s)", ([held[0]["id"]], [held[0]["lease_token"]])
        )
        plans += logged_plans(conn, "SELECT pgmsg_nack(%s, %s)", (held[1]["id"], held[1]["lease_token"]))
        plans += logged_plans(conn, "SELECT * FROM pgmsg_claim_http_slots(2, 2, 'jit', 60, '{}', '{}')")
        pushed = conn.execute(
            "SELECT id AS delivery_id, lease_token FROM message_delivery "
            "WHERE client_id = 'jit-hook' AND status = 'processing' ORDER BY id"
        ).fetchall()
        assert len(pushed) == 2
        plans += logged_plans(
            conn,
            "SELECT pgmsg_record_http_attempt(%s, %s, 200, NULL, 1.0)",
            (pushed[0]["delivery_id"], pushed[0]["lease_token"]),
        )
        plans += logged_plans(
            conn,
            "SELECT * FROM pgmsg_record_http_attempts(%s::bigint[], %s::uuid[], '{503}', '{NULL}', '{1.0}', '{NULL}')",
            ([pushed[1]["delivery_id"]], [pushed[1]["lease_token"]]),
        )
        conn.execute(
            "INSERT INTO message_inbox (message_type, namespace, payload) VALUES ('jit.work', 'default', '{}')"
        )
        plans += logged_plans(conn, "SELECT pgmsg_fan_out_deferred(10)")
        deliveries = conn.execute(
            "SELECT status, count(*) AS n FROM message_delivery WHERE client_id IN ('jit-consumer', 'jit-hook') "
            "GROUP BY status ORDER BY status"
        ).fetchall()
    # The calls did their work: acked, nacked back to pending, one push delivered, one to retry,
    # and the deferred message fanned out.
    assert [(d["status"], d["n"]) for d in deliveries] == [("delivered", 2), ("pending", 3)], deliveries
    top_level = [plan for plan, context in plans if not context]
    assert any("JIT:" in plan for plan in top_level), "the session's own statements were not JIT-compiled"
    for function in HOT_PATH:
        inside = [plan for plan, context in plans if f"function {function}(" in context]
        assert inside, f"no statement of {function} was logged"
        compiled = [plan for plan in inside if "JIT:" in plan]
        assert not compiled, f"{function} JIT-compiled: {compiled[0]}"


def _consume_and_push(session: psycopg.Connection[Any], claim: int, push: int) -> list[tuple[str, str]]:
    """As a consumer and a dispatcher do: claim, ack all but one, nack that one; claim webhooks,
    record all but one in a batch and that one alone. The plans, logged."""
    plans = logged_plans(session, "SELECT * FROM pgmsg_claim('empty-consumer', %s)", (claim,))
    held = session.execute(
        "SELECT id, lease_token FROM message_delivery WHERE client_id = 'empty-consumer' "
        "AND status = 'processing' ORDER BY id"
    ).fetchall()
    assert len(held) == claim
    plans += logged_plans(
        session,
        "SELECT * FROM pgmsg_ack(%s, %s)",
        ([h["id"] for h in held[1:]], [h["lease_token"] for h in held[1:]]),
    )
    plans += logged_plans(session, "SELECT pgmsg_nack(%s, %s)", (held[0]["id"], held[0]["lease_token"]))
    plans += logged_plans(
        session, "SELECT * FROM pgmsg_claim_http_slots(%s, %s, 'empty', 60, '{}', '{}')", (push, push)
    )
    pushed = session.execute(
        "SELECT id, lease_token FROM message_delivery WHERE client_id = 'empty-hook' "
        "AND status = 'processing' ORDER BY id"
    ).fetchall()
    assert len(pushed) == push
    batch = pushed[1:]
    plans += logged_plans(
        session,
        "SELECT * FROM pgmsg_record_http_attempts(%s::bigint[], %s::uuid[], %s::integer[], %s::text[], "
        "%s::numeric[], %s::float8[])",
        (
            [p["id"] for p in batch],
            [p["lease_token"] for p in batch],
            [200] * len(batch),
            [None] * len(batch),
            [1.0] * len(batch),
            [None] * len(batch),
        ),
    )
    plans += logged_plans(
        session,
        "SELECT pgmsg_record_http_attempt(%s, %s, 200, NULL, 1.0)",
        (pushed[0]["id"], pushed[0]["lease_token"]),
    )
    return plans


#: The tables the hot path reads by key (035).
TABLES = ("message_delivery", "messages", "message_inbox")
#: A publish in the test's session: one message for each of its subscribers.
PUBLISH_BOTH = (
    "INSERT INTO messages (message_type, namespace, payload) "
    "VALUES ('empty.work', 'default', '{}'), ('empty.hook', 'default', '{}') RETURNING id"
)


def _history(scratch: str, messages: int) -> None:
    """``messages`` delivered messages for each of the test's subscribers, then ANALYZE: the
    statistics of an earlier, larger table, which a TRUNCATE leaves behind."""
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE delivery_attempts, message_delivery, messages, message_inbox, subscriptions CASCADE"
        )
    with Client(scratch, max_size=1) as client:
        client.subscribe("empty-consumer", "async", message_type="empty.work")
        client.subscribe(
            "empty-hook", "http", message_type="empty.hook", webhook_url="http://127.0.0.1:9/hook"
        )
        for start in range(0, messages, 1000):
            for message_type in ("empty.work", "empty.hook"):
                client.publish_many(
                    [(message_type, {"n": i}, "default") for i in range(start, min(start + 1000, messages))]
                )
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("UPDATE message_delivery SET status = 'delivered', delivered_at = now()")
        conn.execute("ANALYZE message_delivery, messages, subscriptions")


def _session_through_a_backlog(scratch: str, history: int = 0) -> list[tuple[str, str]]:
    """One session's first calls on empty tables (its generic plans are made then), then with the
    first few messages, then with a backlog of 1,000 of each kind: the plans of the last calls.
    ``history``: first that many delivered messages per subscriber, analyzed, and truncated."""
    if history:
        _history(scratch, history)
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE delivery_attempts, message_delivery, messages, message_inbox, subscriptions CASCADE"
        )
        for table in TABLES:  # no autoanalyze (and new plans) midway
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    try:
        with (
            Client(scratch, max_size=1) as client,
            psycopg.connect(scratch, autocommit=True, row_factory=dict_row) as session,
        ):
            client.subscribe("empty-consumer", "async", message_type="empty.work")
            client.subscribe(
                "empty-hook", "http", message_type="empty.hook", webhook_url="http://127.0.0.1:9/hook"
            )
            # The session's first calls, on empty tables, then with the first few messages:
            # its generic plans are made now.
            assert session.execute("SELECT * FROM pgmsg_claim('empty-consumer', 100)").fetchall() == []
            assert (
                session.execute(
                    "SELECT * FROM pgmsg_claim_http_slots(10, 10, 'empty', 60, '{}', '{}')"
                ).fetchall()
                == []
            )
            session.execute(PUBLISH_BOTH)
            for message_type in ("empty.work", "empty.hook"):
                client.publish_many([(message_type, {"n": i}, "default") for i in range(2)])
            _consume_and_push(session, 3, 3)
            client.publish_many([("empty.deferred", {"n": i}, "default") for i in range(3)], deferred=True)
            assert session.execute("SELECT pgmsg_fan_out_deferred(100) AS n").fetchone()["n"] == 3
            # Then the backlog arrives.
            for message_type in ("empty.work", "empty.hook"):
                client.publish_many([(message_type, {"n": i}, "default") for i in range(1000)])
            client.publish_many([("empty.deferred", {"n": i}, "default") for i in range(1000)], deferred=True)
            plans = logged_plans(session, PUBLISH_BOTH)
            plans += _consume_and_push(session, 100, 10)
            plans += logged_plans(session, "SELECT pgmsg_fan_out_deferred(100)")
            statuses = session.execute(
                "SELECT client_id, status, count(*) AS n FROM message_delivery GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
    finally:
        with psycopg.connect(scratch, autocommit=True) as conn:
            for table in TABLES:
                conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
    with psycopg.connect(scratch) as conn:
        assert conn.execute("SELECT count(*) FROM message_inbox").fetchone()[0] == 900
    assert [(s["client_id"], s["status"], s["n"]) for s in statuses] == [
        ("empty-consumer", "delivered", 101),
        ("empty-consumer", "pending", 903),
        ("empty-hook", "delivered", 13),
        ("empty-hook", "pending", 991),
    ]
    return [(plan, context) for plan, context in plans if context]


def test_plans_made_while_the_tables_are_empty_still_read_indexes(scratch: str) -> None:
    """A publisher, consumer or dispatcher that starts on an empty database (a fresh deployment,
    a TRUNCATE) keeps the generic plans of its first calls for the whole session. Planned on
    empty or nearly empty tables, the ack read message_delivery sequentially and the claim read
    messages sequentially: every call got slower as the backlog grew, until autovacuum analyzed
    the table (in the sustained bench, claims and acks went from 4 ms to 60 ms and more within
    half a minute, and the consumers fell ever further behind). 035: the hot-path functions
    plan without sequential scans, so plans made on empty tables read the same indexes as any."""
    nested = _session_through_a_backlog(scratch)
    scans = [
        (context.splitlines()[-1], line.strip())
        for plan, context in nested
        for line in plan.splitlines()
        if re.search(rf"Seq Scan on ({'|'.join(TABLES)}) ", line)
    ]
    assert not scans, scans
    text = "\n".join(plan for plan, _ in nested)
    assert "message_delivery_pkey" in text and "messages_pkey" in text, text


def test_plans_made_with_the_statistics_of_a_larger_table_join_by_key(scratch: str) -> None:
    """A TRUNCATE empties the tables but keeps the statistics of the last ANALYZE. A consumer
    that started then planned the claim's payload join as a merge join over the whole primary
    key of messages, from its first message: every claim read further along it as the backlog
    grew (in the sustained bench, a round after one that autovacuum had analyzed consumed 3,087
    messages/s against 8,800-10,000: each claim read 83,000 index entries of messages for its
    100 rows, 19 ms against 5). 036: the claim joins by key, in nested loops."""
    nested = _session_through_a_backlog(scratch, history=5000)
    joins = [
        (context.splitlines()[-1], line.strip())
        for plan, context in nested
        for line in plan.splitlines()
        if re.search(r"pgmsg_claim\(", context)
        and re.search(r"(Merge|Hash) (Join|Right Join|Left Join|Anti Join|Semi Join)", line)
    ]
    assert not joins, joins
    text = "\n".join(plan for plan, context in nested if re.search(r"pgmsg_claim\(", context))
    assert "Index Scan using messages_pkey on messages m" in text and "Nested Loop" in text, text
