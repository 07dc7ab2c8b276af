"""A subscription's own max_in_flight (migration 032): the claim honours it, bad values are refused.

On the module's scratch server: on the deployed database the deployed dispatcher would
claim what these tests claim by hand.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgmsg import Client, InvalidInput
from tests.support.scratch import scratch_database_fixtures

dsn, client, db = scratch_database_fixtures()

URL = "http://127.0.0.1:9/hook"


def claim(
    db: psycopg.Connection[Any],
    per_subscription: int,
    busy: dict[int, int] | None = None,
    claim_ahead: int | None = None,
) -> list[dict[str, Any]]:
    busy = busy or {}
    ahead = "" if claim_ahead is None else f", {int(claim_ahead)}"
    return db.execute(
        f"SELECT * FROM pgmsg_claim_http_slots(1000, %s, 'probe', 60, %s::bigint[], %s::integer[]{ahead})",
        (per_subscription, list(busy), list(busy.values())),
    ).fetchall()


def hook(client: Client, name: str, **settings: Any) -> int:
    return client.subscribe(name, "http", message_type=name + ".*", webhook_url=URL, **settings).id


def backlogs(client: Client, limits: dict[str, int | None], count: int) -> list[int]:
    """An http subscription per name with that max_in_flight, and ``count`` deliveries each."""
    ids = [hook(client, name, max_in_flight=limit) for name, limit in limits.items()]
    for name in limits:
        client.publish_many([(name + ".x", {"n": n}, "default") for n in range(count)])
    return ids


@pytest.fixture(autouse=True)
def nothing_left(db: psycopg.Connection[Any]) -> None:
    """Each test starts with no subscription and no delivery."""
    db.execute("DELETE FROM subscriptions")
    db.execute("DELETE FROM messages")


def test_the_claim_hands_out_at_most_the_subscriptions_own_limit(
    client: Client, db: psycopg.Connection[Any]
) -> None:
    low, default, high = backlogs(client, {"low": 2, "default": None, "high": 7}, 10)

    rows = claim(db, 4)
    per_sub = {sub: [r for r in rows if r["subscription_id"] == sub] for sub in (low, default, high)}
    assert {sub: len(found) for sub, found in per_sub.items()} == {low: 2, default: 4, high: 7}
    # Each row says its subscription's limit, so the dispatcher's slots follow it.
    assert {sub: {r["max_in_flight"] for r in found} for sub, found in per_sub.items()} == {
        low: {2},
        default: {4},
        high: {7},
    }
    # Held by this dispatcher: nothing more for any of them until one finishes.
    assert claim(db, 4, {low: 2, default: 4, high: 7}) == []
    again = claim(db, 4, {low: 1, default: 4, high: 7})
    assert [r["subscription_id"] for r in again] == [low]


def test_claim_ahead_adds_waiting_claims_up_to_the_limit_again(
    client: Client, db: psycopg.Connection[Any]
) -> None:
    low, default, high = backlogs(client, {"low": 2, "default": None, "high": 9}, 20)

    rows = claim(db, 4, claim_ahead=4)
    counts = {sub: sum(r["subscription_id"] == sub for r in rows) for sub in (low, default, high)}
    assert counts == {low: 2 + 2, default: 4 + 4, high: 9 + 4}


def test_a_changed_limit_applies_to_the_next_claim(client: Client, db: psycopg.Connection[Any]) -> None:
    sub = hook(client, "hook", max_in_flight=3)
    client.publish_many([("hook.x", {"n": n}, "default") for n in range(10)])
    assert len(claim(db, 4)) == 3
    hook(client, "hook", max_in_flight=5)  # subscribing again updates it
    assert [s.max_in_flight for s in client.subscriptions("hook")] == [5]
    assert len(claim(db, 4, {sub: 3})) == 2
    hook(client, "hook")  # and again without it: back to the dispatcher's default
    assert [s.max_in_flight for s in client.subscriptions("hook")] == [None]
    assert len(claim(db, 6, {sub: 5})) == 1


@pytest.mark.parametrize("value", [0, -1, 1001, 2**31 - 1])
def test_out_of_range_is_refused_with_what_to_give(
    client: Client, db: psycopg.Connection[Any], value: int
) -> None:
    with pytest.raises(InvalidInput) as refused:
        hook(client, "bad", max_in_flight=value)
    assert f"max_in_flight {value} is out of range" in str(refused.value)
    assert "give 1 to 1000" in str(refused.value)
    sub = hook(client, "good", max_in_flight=3)
    with pytest.raises(psycopg.errors.CheckViolation, match=f"max_in_flight {value} is out of range"):
        db.execute("UPDATE subscriptions SET max_in_flight = %s WHERE id = %s", (value, sub))
    assert [s.max_in_flight for s in client.subscriptions("good")] == [3]
    assert client.subscriptions("bad") == []


@pytest.mark.parametrize("value", ["abc", "8", 2.5, True])
def test_a_value_that_is_not_an_integer_is_refused(client: Client, value: Any) -> None:
    with pytest.raises(InvalidInput, match="max_in_flight must be an integer"):
        hook(client, "bad", max_in_flight=value)
    assert client.subscriptions("bad") == []


def test_text_is_refused_by_the_database_too(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(
        psycopg.errors.InvalidTextRepresentation, match='invalid input syntax for type integer: "abc"'
    ):
        db.execute(
            "INSERT INTO subscriptions (client_id, delivery_mode, webhook_url, max_in_flight)"
            " VALUES ('bad', 'http', %s, 'abc')",
            (URL,),
        )


def test_only_http_subscriptions_take_it(client: Client) -> None:
    with pytest.raises(InvalidInput, match="max_in_flight applies to http subscriptions only"):
        client.subscribe("consumer", "async", max_in_flight=4)
    assert client.subscriptions("consumer") == []


def test_an_inventory_declared_subscription_sets_it_once(db: psycopg.Connection[Any]) -> None:
    declared = {"client_id": "declared", "delivery_mode": "http", "webhook_url": URL, "max_in_flight": 12}
    ensure = "SELECT pgmsg_ensure_subscription(%s::jsonb) AS changed"
    assert db.execute(ensure, (psycopg.types.json.Jsonb(declared),)).fetchone()["changed"] is True
    assert db.execute(ensure, (psycopg.types.json.Jsonb(declared),)).fetchone()["changed"] is False
    declared.pop("max_in_flight")
    assert db.execute(ensure, (psycopg.types.json.Jsonb(declared),)).fetchone()["changed"] is True
    row = db.execute("SELECT max_in_flight FROM subscriptions WHERE client_id = 'declared'").fetchone()
    assert row["max_in_flight"] is None
