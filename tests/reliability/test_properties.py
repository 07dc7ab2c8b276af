"""Bad input, generated: payloads, message types, namespaces, subscriptions and CLI arguments.

Hypothesis draws them from wide strategies: JSON-like documents with huge strings, tens of
thousands of elements, nesting far deeper than Python's json module or PostgreSQL's parser
go, NaN and infinities, integers past every limit, unicode with NUL characters, Python
objects JSON cannot carry; names and patterns of any text, NUL included, and very long.

The property is the same for every entry point. Either pgmsg accepts the input and stores it
exactly (the payload equal to the input's JSON round trip, names as given), or it refuses it
with ``pgmsg.InvalidInput`` (the CLI: exit code 1, or 2 for usage errors, with one
``Error: ...`` line) and leaves no row behind. Never a bare psycopg error, a RecursionError,
another exception type or a traceback.

The examples are derandomized (the same on every run, so CI is reproducible) and bounded,
so that the file runs in well under two minutes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import reprlib
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context, event

from pgmsg import Client, InvalidInput, Subscription
from pgmsg.cli import cli

PROFILE = "pgmsg-bad-input"
settings.register_profile(
    PROFILE,
    max_examples=50,
    deadline=None,  # a round trip to PostgreSQL per example; huge payloads take longer
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,  # nothing stored between runs
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)
BAD_INPUT = settings.get_profile(PROFILE)

#: An error message pgmsg shows must stay readable whatever the size of the input.
MAX_MESSAGE_LENGTH = 1000
#: The CLI shows control and invisible characters escaped (up to 10 characters each), so a
#: refusal quoting 100 such characters back is longer; still bounded whatever the input's size.
#: (Usage errors, exit code 2, are click's: they quote the argument back whole, as typed.)
MAX_CLI_ERROR_LENGTH = 2500
#: Deeper than this, Python's json (and PostgreSQL's parser) may refuse; shallower, they must not.
SAFE_DEPTH = 300
_sequence = itertools.count()

_brief = reprlib.Repr()
_brief.maxlevel, _brief.maxstring, _brief.maxother, _brief.maxlong = 4, 60, 60, 60


class Shown:
    """A generated value with a repr Hypothesis can print: it prints every example it runs,
    and a 100,000 levels deep list or a 5,000-digit integer has none."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        try:
            return f"Shown({_brief.repr(self.value)})"
        except (ValueError, RecursionError):
            return f"Shown(<{type(self.value).__name__}>)"

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:
        printer.text(repr(self))


# -- strategies ----------------------------------------------------------------

#: Characters that break naive quoting, parsing or terminals, and NUL.
SPECIAL = "\x00'\"\\\n\r\t *%_?é\u00df\u202e\ufeff\u0301\U0001f600/:.-;$\x1b"
chars = st.one_of(st.characters(), st.sampled_from(SPECIAL))  # st.characters(): no surrogates
texts = st.text(chars, max_size=30)


def _repeat(seed: str, length: int) -> str:
    return (seed * (length // len(seed) + 1))[:length]


def long_texts(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.builds(_repeat, st.text(chars, min_size=1, max_size=4), st.integers(min_size, max_size))


#: Valid message types and namespaces, so that some examples are accepted.
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,40}", fullmatch=True)
any_text = st.one_of(
    texts,
    names,
    long_texts(200, 300_000),
    st.sampled_from(["", " ", "\x00", "a\x00b", "a" * 255, "a" * 256, "*", "%", "order.created ", " order"]),
)

numbers = st.one_of(
    st.integers(),
    # Integers up to and past Python's 4300-digit str() limit (built, as their repr fails).
    st.builds(
        lambda digits, sign: sign * (10 ** (digits - 1) + 7), st.integers(19, 5000), st.sampled_from([1, -1])
    ),
    st.floats(),  # NaN, infinities, -0.0, subnormals
    st.sampled_from(
        [
            math.nan,
            math.inf,
            -math.inf,
            -0.0,
            5e-324,
            1.7976931348623157e308,
            2**63,
            -(2**63) - 1,
            1e300,
            1.2345e20,
        ]
    ),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts, long_texts(1000, 1_000_000))
keys = st.one_of(
    texts, texts, st.integers(), st.floats(), st.booleans(), st.none(), st.tuples(st.integers())
)  # a tuple key cannot be encoded
NOT_JSON = [
    object(),
    {1, 2},
    frozenset(),
    b"bytes",
    bytearray(b"x"),
    1j,
    Decimal("1.5"),
    Decimal("NaN"),
    dt.datetime(2026, 11, 27, 12, 0),
    dt.date(2026, 11, 27),
    range(3),
    Ellipsis,
    NotImplemented,
    type,
    print,
    ValueError("no"),
]
not_json = st.one_of(
    st.sampled_from(NOT_JSON),
    st.builds(object),
    st.sets(st.integers(), max_size=3),
    st.binary(max_size=8),
    st.complex_numbers(),
    st.decimals(),
    st.datetimes(),
)
json_like = st.recursive(
    st.one_of(scalars, scalars, scalars, not_json),
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(keys, kids, max_size=4), st.tuples(kids, kids)
    ),
    max_leaves=12,
)


def nest(depth: int, kind: str, leaf: Any) -> Any:
    """``leaf`` wrapped ``depth`` times in lists, objects or both (built without recursion)."""
    value = leaf
    for level in range(depth):
        as_list = kind == "list" or (kind == "mixed" and level % 2)
        value = [value] if as_list else {"k": value}
    return value


def circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


deep = st.builds(
    nest,
    st.one_of(st.integers(0, 2500), st.sampled_from([990, 1000, 5000, 100_000])),
    st.sampled_from(["list", "dict", "mixed"]),
    st.one_of(st.integers(), texts),
)
wide = st.one_of(
    st.builds(lambda n: list(range(n)), st.integers(0, 100_000)),
    st.builds(lambda n: {f"k{i}": i for i in range(n)}, st.integers(0, 30_000)),
)
payloads = st.one_of(
    st.none(),
    json_like,
    json_like,
    deep,
    wide,
    not_json,
    st.builds(lambda s: {"s": s}, long_texts(100_000, 3_000_000)),
    st.builds(circular),
)

#: Options of subscribe() that are integers, with the ranges the database allows.
INT_OPTIONS = ("http_timeout_ms", "max_attempts", "lease_seconds", "retry_base_ms", "retry_max_ms")
ints = st.one_of(
    st.integers(1, 100),
    st.integers(100, 60_000),
    st.integers(-(2**70), 2**70),
    st.sampled_from(
        [0, 1, 10, 99, 100, 43200, 43201, 60000, 60001, 3_600_000, 2**31 - 1, 2**31, -(2**31) - 1]
    ),
)
wrong_types = st.one_of(st.floats(), st.booleans(), st.text(max_size=5), st.none(), st.just([1]))
flags = st.one_of(st.booleans(), st.booleans(), st.sampled_from([None, 0, 1, "yes", "maybe", 2.5]))
urls = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "http://127.0.0.1:9/hook",
            "http://localhost:9/x",
            "https://127.0.0.1:9/x",
            "http://169.254.169.254/latest",
            "http://user:pw@127.0.0.1/x",
            "ftp://127.0.0.1/x",
            "http://2130706433/",
            "http://[::ffff:127.0.0.1]:9/",
            "http://example.com/x",
            "http://",
        ]
    ),
    st.builds(lambda path: "http://127.0.0.1:9/" + path, texts),
    any_text,
)
filters = st.one_of(st.none(), json_like, st.dictionaries(texts, json_like, max_size=3), not_json)
secrets_ = st.one_of(st.none(), st.none(), any_text, st.just("whsec_" + "A" * 43 + "="))
delivery_modes = st.one_of(
    st.sampled_from(["async", "http", "notify"]), st.sampled_from(["async", "http", "notify"]), any_text
)
push_modes = st.one_of(st.sampled_from(["dispatcher", "in_transaction"]), any_text)


# -- checks ----------------------------------------------------------------------


def plainly_valid(value: Any) -> bool:
    """JSON any PostgreSQL takes as it is: text keys without NUL, strings without NUL,
    finite floats, integers Python can print, not too deep. (Iterative: deep values are the point.)"""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > SAFE_DEPTH:
            return False
        if item is None or isinstance(item, bool):
            continue
        if type(item) is int:
            if abs(item) >= 10**4300:
                return False
        elif type(item) is float:
            if not math.isfinite(item):
                return False
        elif type(item) is str:
            if "\x00" in item:
                return False
        elif type(item) in (list, tuple):
            stack.extend((x, depth + 1) for x in item)
        elif type(item) is dict:
            for key, x in item.items():
                if type(key) is not str or "\x00" in key:
                    return False
                stack.append((x, depth + 1))
        else:
            return False
    return True


def canonical(value: Any) -> Any:
    """A plainly valid value as it compares after a trip through jsonb: numbers as Decimal."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, list | tuple):
        return [canonical(x) for x in value]
    return {k: canonical(x) for k, x in value.items()}


def decoded(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def json_text(value: Any) -> str | None:
    """The JSON round trip reference: what the input is as JSON, or None when it is not JSON."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None


def tally(outcome: str) -> None:
    """Count outcomes for --hypothesis-show-statistics (accepted vs refused examples)."""
    if currently_in_test_context():
        event(outcome)


def assert_clear_refusal(exc: BaseException) -> None:
    assert type(exc) is InvalidInput, f"{type(exc).__name__} escaped: {exc!r}"[:2000]
    tally("refused")
    message = str(exc)
    assert message.strip(), "InvalidInput without a message"
    assert len(message) <= MAX_MESSAGE_LENGTH, (
        f"unreadable message of {len(message)} characters: {message[:300]}..."
    )
    assert "Traceback" not in message


def assert_payload_stored(db: psycopg.Connection[Any], message_id: int, payload: Any) -> None:
    """The stored payload is the input's JSON round trip (compared by PostgreSQL, and in Python
    with numbers as decimals); for plain JSON it equals the input itself."""
    expected = {} if payload is None else payload
    reference = json_text(expected)
    assert reference is not None, "pgmsg accepted a payload that is not JSON"
    row = db.execute(
        "SELECT payload::text AS text, payload = %s::jsonb AS same FROM messages WHERE id = %s",
        (reference, message_id),
    ).fetchone()
    assert row is not None and row["same"], "stored payload differs from the input's JSON"
    if plainly_valid(expected):
        assert decoded(row["text"]) == canonical(expected)
        assert decoded(row["text"]) == decoded(reference)


def since(db: psycopg.Connection[Any]) -> dt.datetime:
    """A moment before the next statement of this test: rows it adds are created after it."""
    return db.execute("SELECT clock_timestamp() - interval '5 seconds' AS t").fetchone()["t"]


def count_new(db: psycopg.Connection[Any], after: dt.datetime, where: str, params: tuple[Any, ...]) -> int:
    return db.execute(
        f"SELECT count(*) AS n FROM messages WHERE created_at >= %s AND {where}", (after, *params)
    ).fetchone()["n"]


def sendable(text: str) -> bool:
    """Whether the text can be a query parameter at all (PostgreSQL text holds no NUL)."""
    return "\x00" not in text


# -- Client.publish ------------------------------------------------------------------


@BAD_INPUT
@given(shown=payloads.map(Shown))
@example(shown=Shown(nest(100_000, "list", 1)))
@example(shown=Shown(nest(5000, "dict", "x")))
@example(shown=Shown({"nul": "a\x00b"}))
@example(shown=Shown({"a\x00": 1}))
@example(shown=Shown([math.nan]))
@example(shown=Shown({"big": 10**4300}))
@example(shown=Shown({1: "int key", "1": "text key"}))
@example(shown=Shown(circular()))
@example(shown=Shown({"when": dt.datetime(2026, 1, 1)}))
@example(shown=Shown("s" * 3_000_000))
@example(shown=Shown([1e300, 1.2345e20, 5e-324, -0.0, 2**63, 10**4299]))
def test_publish_stores_the_payload_or_refuses_it(
    client: Client, db: psycopg.Connection[Any], run_id: str, shown: Shown
) -> None:
    payload = shown.value
    message_type = f"{run_id}.p{next(_sequence)}"
    after = since(db)
    try:
        message_id = client.publish(message_type, payload, "ns")
    except Exception as exc:
        assert_clear_refusal(exc)
        assert count_new(db, after, "message_type = %s", (message_type,)) == 0
        assert json_text(payload) is None or not plainly_valid(payload), f"valid payload refused: {exc}"
        return
    tally("accepted")
    try:
        assert_payload_stored(db, message_id, payload)
        row = db.execute(
            "SELECT message_type, namespace FROM messages WHERE id = %s", (message_id,)
        ).fetchone()
        assert (row["message_type"], row["namespace"]) == (message_type, "ns")
    finally:
        db.execute("DELETE FROM messages WHERE id = %s", (message_id,))


@BAD_INPUT
@given(message_type=any_text, namespace=any_text, key=st.one_of(st.none(), any_text))
@example(message_type="a\x00b", namespace="default", key=None)
@example(message_type="ok.type", namespace="a\x00", key=None)
@example(message_type="ok.type", namespace="default", key="k\x00")
@example(message_type="ok.type", namespace="default", key="")
@example(message_type="ok.type", namespace="default", key="k" * 256)
@example(message_type="t" * 300_000, namespace="default", key=None)
@example(message_type="ok.type", namespace="n" * 300_000, key="k" * 300_000)
def test_publish_stores_names_exactly_or_refuses_them(
    client: Client,
    db: psycopg.Connection[Any],
    run_id: str,
    message_type: str,
    namespace: str,
    key: str | None,
) -> None:
    marker = f"{run_id}-{next(_sequence)}"
    after = since(db)
    try:
        message_id = client.publish(message_type, {"marker": marker}, namespace, key=key)
    except Exception as exc:
        assert_clear_refusal(exc)
        assert count_new(db, after, "payload @> %s::jsonb", (json.dumps({"marker": marker}),)) == 0
        return
    tally("accepted")
    try:
        row = db.execute(
            "SELECT message_type, namespace, message_key, payload FROM messages WHERE id = %s", (message_id,)
        ).fetchone()
        assert row == {
            "message_type": message_type,
            "namespace": namespace,
            "message_key": key,
            "payload": {"marker": marker},
        }
    finally:
        db.execute("DELETE FROM messages WHERE id = %s", (message_id,))


# -- Client.publish_many --------------------------------------------------------------


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Any], int | None]:
    """A batch of good messages, maybe with one bad element somewhere (its index, or None)."""
    good = draw(
        st.lists(
            st.tuples(
                st.just("good"),
                st.one_of(st.none(), st.dictionaries(names, st.integers(), max_size=3)),
                names,
            ),
            min_size=0,
            max_size=6,
        )
    )
    if not draw(st.booleans()):
        return good, None
    bad = draw(
        st.one_of(
            st.tuples(st.just("bad"), payloads, names),  # any payload
            st.tuples(any_text, st.just({}), names),  # any type
            st.tuples(st.just("bad"), st.just({}), any_text),  # any namespace
            st.tuples(
                st.one_of(st.none(), st.integers(), st.just(b"x")),
                st.just({}),
                st.one_of(names, st.integers()),
            ),
            st.sampled_from([("bad", {}), ("bad",), (), None, "bad", ("bad", {}, "ns", "extra")]),
        )
    )
    where = draw(st.integers(0, len(good)))
    return [*good[:where], bad, *good[where:]], where


@BAD_INPUT
@given(shown=batches().map(Shown))
@example(shown=Shown(([("good", {}, "ns"), ("bad", {"x": "\x00"}, "ns")], 1)))
@example(shown=Shown(([("good", {}, "ns"), ("not ok", {}, "ns")], 1)))
@example(shown=Shown(([("bad", nest(5000, "list", 0), "ns"), ("good", {}, "ns")], 0)))
@example(shown=Shown(([("good", {}, "ns"), ("bad", [math.inf], "ns")], 1)))
@example(shown=Shown(([("good", {}, "ns"), ("b\x00d", {}, "ns")], 1)))
@example(shown=Shown(([("good", {}, "ns"), ("bad", {}, "ns\x00")], 1)))
@example(shown=Shown(([("good", {}, "ns"), ("bad", {})], 1)))
@example(shown=Shown(([("good", {}, "ns"), None], 1)))
def test_publish_many_stores_all_or_nothing(
    client: Client, db: psycopg.Connection[Any], run_id: str, shown: Shown
) -> None:
    elements, bad_at = shown.value
    prefix = f"{run_id}.b{next(_sequence)}."
    messages: list[Any] = []
    for i, element in enumerate(elements):
        if isinstance(element, tuple) and len(element) == 3 and element[0] in ("good", "bad"):
            element = (f"{prefix}{i}", element[1], element[2])  # the good ones' types are this batch's
        messages.append(element)
    after = since(db)
    try:
        ids = client.publish_many(messages)
    except Exception as exc:
        assert_clear_refusal(exc)
        assert bad_at is not None, f"a batch of good messages was refused: {exc}"
        assert count_new(db, after, "starts_with(message_type, %s)", (prefix,)) == 0, (
            "part of a refused batch stored"
        )
        return
    tally("accepted")
    try:
        assert len(ids) == len(messages)
        for message_id, (message_type, payload, namespace) in zip(ids, messages, strict=False):
            row = db.execute(
                "SELECT message_type, namespace FROM messages WHERE id = %s", (message_id,)
            ).fetchone()
            assert row == {"message_type": message_type, "namespace": namespace}
            assert_payload_stored(db, message_id, payload)
    finally:
        db.execute("DELETE FROM messages WHERE id = ANY(%s)", (ids,))


# -- Client.subscribe ------------------------------------------------------------------


@st.composite
def subscriptions(draw: st.DrawFn) -> dict[str, Any]:
    """subscribe() arguments: a valid set, then a few of them (often none) drawn from wide
    strategies instead. Either the type or the namespace filter stays one only this test
    publishes to, so that no subscription made here ever receives anyone else's messages."""
    mode = draw(st.sampled_from(["async", "http", "notify"]))
    kwargs: dict[str, Any] = {
        "delivery_mode": mode,
        "webhook_url": draw(
            st.builds(lambda path: "http://127.0.0.1:9/" + path, names)
            if mode == "http"
            else st.one_of(st.none(), names)
        ),
        "notify_channel": draw(st.one_of(st.none(), names)),
        "push_mode": draw(st.sampled_from(["dispatcher", "in_transaction"])),
        "payload_filter": draw(
            st.one_of(st.none(), st.dictionaries(names, st.one_of(st.integers(), names), max_size=3))
        ),
        "ordered": draw(st.booleans()),
        "durable": draw(st.booleans()) if mode == "notify" else False,
        "notify_payload": draw(st.booleans()) if mode == "notify" else False,
        "signing_secret": draw(st.one_of(st.none(), st.just("whsec_" + "A" * 43 + "="))),
        "http_timeout_ms": draw(st.integers(100, 60_000)),
        "max_attempts": draw(st.integers(1, 100)),
        "lease_seconds": draw(st.integers(1, 43_200)),
        "retry_base_ms": draw(st.integers(10, 1000)),
        "retry_max_ms": draw(st.integers(1000, 86_400_000)),
    }
    free, fixed = ("message_type", "namespace") if draw(st.booleans()) else ("namespace", "message_type")
    kwargs[free] = draw(st.one_of(names, st.text(st.characters(exclude_characters="\x00"), max_size=40)))
    wide = {
        "delivery_mode": delivery_modes,
        "webhook_url": urls,
        "notify_channel": st.one_of(st.none(), any_text),
        "push_mode": push_modes,
        "payload_filter": filters,
        "ordered": flags,
        "durable": flags,
        "notify_payload": flags,
        "signing_secret": secrets_,
        free: any_text,
        **{name: st.one_of(ints, ints, wrong_types) for name in INT_OPTIONS},
    }
    for name in draw(st.sets(st.sampled_from(sorted(wide)), max_size=3)):
        kwargs[name] = draw(wide[name])
    kwargs[fixed] = None  # replaced by a name of this test's own
    kwargs["client_suffix"] = draw(st.one_of(names, texts, long_texts(60, 5000)))
    return kwargs


#: subscribe()'s defaults, for the examples that leave an argument out.
SUBSCRIBE_DEFAULTS = {
    "webhook_url": None,
    "notify_channel": None,
    "push_mode": "dispatcher",
    "payload_filter": None,
    "ordered": False,
    "durable": False,
    "notify_payload": False,
    "signing_secret": None,
}


@pytest.fixture
def only(dsn: str, run_id: str) -> Iterator[str]:
    """The type or namespace filter only this test's subscriptions have. Any left behind (a
    client id not named after run_id, a database restart between insert and delete) go with it."""
    name = f"{run_id}.only"
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM subscriptions WHERE message_type = %s OR namespace = %s", (name, name))


def stored_subscription(db: psycopg.Connection[Any], subscription_id: int) -> dict[str, Any]:
    return db.execute("SELECT * FROM subscriptions WHERE id = %s", (subscription_id,)).fetchone()


def expected_pattern(value: str) -> str:
    """The database trims blanks off a filter; an empty one matches everything."""
    return value.strip(" ") or "*"


@BAD_INPUT
@given(shown=subscriptions().map(Shown))
@example(
    shown=Shown({"delivery_mode": "async", "message_type": "a\x00", "namespace": None, "client_suffix": "x"})
)
@example(
    shown=Shown(
        {"delivery_mode": "async", "message_type": "t" * 5000, "namespace": None, "client_suffix": "x"}
    )
)
@example(
    shown=Shown({"delivery_mode": "async", "message_type": None, "namespace": "*", "client_suffix": "\x00"})
)
@example(
    shown=Shown(
        {
            "delivery_mode": "notify",
            "message_type": None,
            "namespace": "*",
            "client_suffix": "x",
            "notify_channel": "c" * 64,
        }
    )
)
@example(
    shown=Shown(
        {
            "delivery_mode": "async",
            "message_type": None,
            "namespace": "*",
            "client_suffix": "x",
            "notify_channel": "",
        }
    )
)
@example(
    shown=Shown(
        {
            "delivery_mode": "http",
            "message_type": None,
            "namespace": "*",
            "client_suffix": "x",
            "webhook_url": "http://127.0.0.1:9/\x00",
        }
    )
)
@example(
    shown=Shown(
        {
            "delivery_mode": "async",
            "message_type": None,
            "namespace": "*",
            "client_suffix": "x",
            "max_attempts": 2**40,
            "lease_seconds": True,
            "http_timeout_ms": 5000.5,
        }
    )
)
@example(
    shown=Shown(
        {
            "delivery_mode": "async",
            "message_type": None,
            "namespace": "*",
            "client_suffix": "x",
            "payload_filter": {"a": math.nan},
        }
    )
)
@example(
    shown=Shown(
        {
            "delivery_mode": "async",
            "message_type": None,
            "namespace": "*",
            "client_suffix": "x",
            "payload_filter": nest(5000, "dict", 1),
        }
    )
)
@example(
    shown=Shown(
        {
            "delivery_mode": "async",
            "message_type": None,
            "namespace": "*",
            "client_suffix": "x",
            "ordered": "maybe",
            "durable": 1,
        }
    )
)
def test_subscribe_stores_what_it_is_given_or_refuses_it(
    client: Client, db: psycopg.Connection[Any], run_id: str, only: str, shown: Shown
) -> None:
    kwargs = {**SUBSCRIBE_DEFAULTS, **shown.value}
    suffix = kwargs.pop("client_suffix")
    client_id = f"{run_id}-{next(_sequence)}{suffix}"
    own = only
    for name in ("message_type", "namespace"):
        if kwargs.get(name) is None:
            kwargs[name] = own
    count_sql = "SELECT count(*) AS n FROM subscriptions WHERE starts_with(client_id, %s)"
    before = db.execute(count_sql, (run_id,)).fetchone()["n"]
    try:
        sub = client.subscribe(client_id, **kwargs)
    except Exception as exc:
        assert_clear_refusal(exc)
        assert db.execute(count_sql, (run_id,)).fetchone()["n"] == before, "a refused subscription left a row"
        return
    tally("accepted")
    try:
        assert isinstance(sub, Subscription)
        row = stored_subscription(db, sub.id)
        assert row is not None
        mode = kwargs["delivery_mode"]
        assert row["client_id"] == sub.client_id == client_id
        assert row["delivery_mode"] == mode
        assert row["message_type"] == sub.message_type == expected_pattern(kwargs["message_type"])
        assert row["namespace"] == sub.namespace == expected_pattern(kwargs["namespace"])
        assert row["webhook_url"] == kwargs["webhook_url"]
        channel = kwargs["notify_channel"]
        assert row["notify_channel"] == ((channel or client_id) if mode == "notify" else channel)
        assert row["push_mode"] == kwargs["push_mode"]
        for name in INT_OPTIONS:
            if name in kwargs:
                assert type(kwargs[name]) is int and row[name] == kwargs[name], name
        for name in ("ordered", "durable", "notify_payload"):
            assert type(kwargs[name]) is bool and row[name] is kwargs[name], name
        if kwargs["payload_filter"] is None:
            assert row["payload_filter"] is None
        else:
            reference = json_text(kwargs["payload_filter"])
            assert reference is not None
            assert db.execute(
                "SELECT payload_filter = %s::jsonb AS same FROM subscriptions WHERE id = %s",
                (reference, sub.id),
            ).fetchone()["same"]
        if kwargs["signing_secret"] is not None:
            assert row["signing_secret"] == kwargs["signing_secret"]
        elif mode == "http":
            assert row["signing_secret"].startswith("whsec_")
        assert sub == Subscription(**{f: row[f] for f in Subscription.__dataclass_fields__})
    finally:
        db.execute("DELETE FROM subscriptions WHERE id = %s", (sub.id,))


@BAD_INPUT
@given(client_id=any_text)
@example(client_id="")
@example(client_id="\x00")
@example(client_id="a" * 63)
@example(client_id="a" * 64)
@example(client_id="x" * 300_000)
def test_subscribe_with_any_client_id(
    client: Client, db: psycopg.Connection[Any], only: str, client_id: str
) -> None:
    """Client ids not made by this test: accepted ones are removed at once (and an id some real
    subscriber already uses is skipped, so that nothing outside the test is touched)."""
    if (
        sendable(client_id)
        and db.execute(
            "SELECT count(*) AS n FROM subscriptions WHERE client_id = %s", (client_id,)
        ).fetchone()["n"]
    ):
        return
    try:
        sub = client.subscribe(client_id, "async", message_type=only)
    except Exception as exc:
        assert_clear_refusal(exc)
        if sendable(client_id):
            assert (
                db.execute(
                    "SELECT count(*) AS n FROM subscriptions WHERE client_id = %s", (client_id,)
                ).fetchone()["n"]
                == 0
            )
        return
    tally("accepted")
    try:
        assert stored_subscription(db, sub.id)["client_id"] == client_id
    finally:
        db.execute("DELETE FROM subscriptions WHERE id = %s", (sub.id,))


# -- nesting deeper than PostgreSQL allows ---------------------------------------------------------


def test_nesting_deeper_than_postgresql_allows_is_invalid_input(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    """Python's json stops at its recursion limit; with the limit raised (in a thread with a
    large stack, as a service might run) the document reaches PostgreSQL, whose parser stops at
    max_stack_depth. Both are InvalidInput, not a RecursionError or a 'connection' error."""
    import sys

    message_type = f"{run_id}.deep"
    after = since(db)
    outcome: dict[str, BaseException | int] = {}

    def publish_deep() -> None:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(1_000_000)
        try:
            outcome["result"] = client.publish(message_type, nest(300_000, "list", 0))
        except BaseException as exc:
            outcome["result"] = exc
        finally:
            sys.setrecursionlimit(limit)

    previous = threading.stack_size(1024 * 1024 * 1024)
    try:
        worker = threading.Thread(target=publish_deep)
        worker.start()
    finally:
        threading.stack_size(previous)
    worker.join(120)
    result = outcome["result"]
    assert isinstance(result, BaseException), "a 300,000 levels deep document was stored"
    assert_clear_refusal(result)
    assert count_new(db, after, "message_type = %s", (message_type,)) == 0


def test_text_that_is_not_unicode_is_invalid_input(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    """Lone surrogates: what Python makes of undecodable bytes in argv or a file name."""
    after = since(db)
    for call in (
        lambda: client.publish("bad\udcff", {}),
        lambda: client.publish(f"{run_id}.ok", {}, "ns\udcff"),
        lambda: client.publish(f"{run_id}.ok", {"s": "\udcff"}),
        lambda: client.publish(f"{run_id}.ok", {}, key="\ud800"),
        lambda: client.publish_many([(f"{run_id}.ok", {}, "ns"), ("bad\udcff", {}, "ns")]),
        lambda: client.subscribe(f"{run_id}-\udcff", "async"),
        lambda: client.subscribe(f"{run_id}-s", "async", message_type="x\udcff"),
        lambda: client.subscribe(f"{run_id}-s", "http", webhook_url="http://127.0.0.1:9/\udcff"),
    ):
        with pytest.raises(Exception) as caught:
            call()
        assert_clear_refusal(caught.value)
    assert count_new(db, after, "starts_with(message_type, %s)", (run_id,)) == 0
    assert (
        db.execute(
            "SELECT count(*) AS n FROM subscriptions WHERE starts_with(client_id, %s)", (run_id,)
        ).fetchone()["n"]
        == 0
    )


# -- the CLI ----------------------------------------------------------------------------


@pytest.fixture
def invoke(dsn: str) -> Iterator[Any]:
    """``pgmsg ARGS...`` in-process; exceptions are caught so that the test can say which escaped."""

    def run(*args: str) -> Result:
        return CliRunner().invoke(
            cli, list(args), env={"PGMSG_DSN": dsn, "PGHOST": "127.0.0.1"}, catch_exceptions=True
        )

    run.dsn = dsn  # type: ignore[attr-defined]
    yield run


def assert_clean_exit(result: Result, allowed: tuple[int, ...] = (0, 1, 2)) -> None:
    """Exit 0; or 1 (refused) or 2 (usage) with one 'Error: ...' line on stderr and, on stdout,
    nothing or (--json) one JSON error object. No exception, no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception!r}"[:2000]
    )
    assert "Traceback" not in result.output
    assert result.exit_code in allowed, (result.exit_code, result.output[:2000])
    tally(f"exit {result.exit_code}")
    if result.exit_code != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, f"no single Error: line in {result.output[:2000]!r}"
        if result.exit_code == 1:  # pgmsg's refusal (usage errors quote the argument back as typed)
            assert len(errors[0]) <= MAX_CLI_ERROR_LENGTH, f"unreadable error of {len(errors[0])} characters"
        others = [
            line
            for line in result.stderr.splitlines()
            if line and not line.startswith(("Error:", "Usage:", "Try '"))
        ]
        assert not others, f"more than the error line: {result.output[:2000]!r}"
        if result.stdout.strip():
            document = json.loads(result.stdout)
            assert set(document) == {"error"}, f"stdout is not one JSON error: {result.stdout[:2000]!r}"
            assert document["error"]["message"] in errors[0], (document, errors[0])


cli_text = st.one_of(
    texts, names, long_texts(100, 20_000), st.sampled_from(["", "-", "--", "-x", "--help=x"])
)


def loose_json(value: Any) -> str:
    """JSON text of a generated value, as loose as Python's json writes it (NaN included)."""
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):  # tuple keys, integers past 4300 digits
        return "[" + "9" * 5000 + "]"


payload_texts = st.one_of(
    st.builds(loose_json, st.one_of(json_like, st.dictionaries(texts, scalars, max_size=3))),
    texts,
    st.builds(lambda n: "[" * n + "]" * n, st.integers(1, 200_000)),
    st.builds(lambda n: '{"a":' * n + "1" + "}" * n, st.integers(1, 5000)),
    st.builds(lambda n: "1" * n, st.integers(1, 10_000)),
    st.sampled_from(
        [
            "NaN",
            "-Infinity",
            "[Infinity]",
            '{"a": NaN}',
            '"\\u0000"',
            '"\\ud800"',
            '{"a":1,"a":2}',
            "",
            "{",
            "null",
            "1e999",
            "-",
            "{'a': 1}",
        ]
    ),
)


@BAD_INPUT
@given(
    message_type=st.one_of(cli_text, st.builds(lambda s: "PREFIX" + s, cli_text)),
    payload=st.one_of(st.none(), payload_texts),
    namespace=st.one_of(st.none(), cli_text),
    key=st.one_of(st.none(), cli_text),
)
@example(message_type="PREFIX.t", payload="[" * 100_000 + "]" * 100_000, namespace=None, key=None)
@example(message_type="PREFIX.t", payload="1" * 5000, namespace=None, key=None)
@example(message_type="PREFIX.t", payload="NaN", namespace=None, key=None)
@example(message_type="PREFIX.t", payload='"\\u0000"', namespace=None, key=None)
@example(message_type="PREFIX\x00", payload=None, namespace=None, key=None)
@example(message_type="PREFIX\n.t", payload=None, namespace=None, key=None)
@example(message_type="PREFIX.t\udcff", payload=None, namespace=None, key=None)
@example(message_type="PREFIX.t", payload=None, namespace="a\x00", key="k\x00")
@example(message_type="PREFIX.t", payload=None, namespace=None, key="k" * 300)
def test_cli_publish_with_any_arguments(
    invoke: Any,
    db: psycopg.Connection[Any],
    run_id: str,
    message_type: str,
    payload: str | None,
    namespace: str | None,
    key: str | None,
) -> None:
    message_type = message_type.replace("PREFIX", f"{run_id}.{next(_sequence)}")
    args = ["--json", "publish", message_type]
    if payload is not None:
        args.append(payload)
    if namespace is not None:
        args += ["--namespace", namespace]
    if key is not None:
        args += ["--key", key]
    after = since(db)
    result = invoke(*args)
    assert_clean_exit(result)
    if result.exit_code != 0:
        try:
            assert count_new(db, after, "message_type = %s", (message_type,)) == 0
        except (psycopg.DataError, UnicodeEncodeError):
            pass  # text PostgreSQL cannot hold (NUL, a lone surrogate): it cannot have been stored either
        return
    published = json.loads(result.stdout)
    try:
        row = db.execute(
            "SELECT message_type, namespace, message_key, payload::text AS payload FROM messages "
            "WHERE id = %s",
            (published["id"],),
        ).fetchone()
        assert row["message_type"] == message_type
        assert row["namespace"] == ("default" if namespace is None else namespace)
        assert row["message_key"] == key
        # The JSON round trip of the text given (Python's json decodes it, as the CLI does).
        expected = "{}" if payload is None else json_text(json.loads(payload))
        assert expected is not None, "the CLI stored a payload that is not JSON"
        assert db.execute("SELECT %s::jsonb = %s::jsonb AS same", (row["payload"], expected)).fetchone()[
            "same"
        ]
    finally:
        db.execute("DELETE FROM messages WHERE id = %s", (published["id"],))


@st.composite
def add_options(draw: st.DrawFn) -> dict[str, str]:
    """Options of `subscriptions add`: valid ones, a few (often none) replaced by any text."""
    options = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "--url": st.builds(lambda path: "http://127.0.0.1:9/" + path, names),
                "--channel": names,
                "--timeout-ms": st.integers(100, 60_000).map(str),
                "--max-attempts": st.integers(1, 100).map(str),
                "--lease-seconds": st.integers(1, 43_200).map(str),
                "--payload-filter": st.dictionaries(names, st.integers(), max_size=2).map(json.dumps),
                "--push-mode": st.sampled_from(["dispatcher", "in_transaction"]),
            },
        )
    )
    for option in draw(
        st.sets(
            st.sampled_from(
                [
                    "--url",
                    "--channel",
                    "--timeout-ms",
                    "--max-attempts",
                    "--lease-seconds",
                    "--payload-filter",
                    "--push-mode",
                ]
            ),
            max_size=2,
        )
    ):
        options[option] = draw(st.one_of(cli_text, st.integers().map(str)))
    return options


@BAD_INPUT
@given(
    suffix=st.one_of(names, names, cli_text),
    mode=st.tuples(st.integers(0, 3), cli_text).map(lambda c: ("async", "http", "notify", c[1])[c[0]]),
    free=st.sampled_from(["--type", "--namespace"]),
    pattern=st.one_of(names, names, cli_text),
    options=add_options(),
    switches=st.lists(st.sampled_from(["--ordered", "--durable", "--show-secrets"]), unique=True, max_size=3),
)
@example(suffix="x", mode="notify", free="--type", pattern="a", options={"--channel": "c" * 64}, switches=[])
@example(suffix="\x00", mode="async", free="--type", pattern="a", options={}, switches=[])
@example(suffix="x", mode="async", free="--type", pattern="a\x00", options={}, switches=[])
@example(suffix="x", mode="async", free="--type", pattern="a" * 10_000, options={}, switches=[])
@example(
    suffix="x",
    mode="http",
    free="--type",
    pattern="a",
    options={"--url": "http://127.0.0.1:9/\n"},
    switches=[],
)
@example(
    suffix="x",
    mode="async",
    free="--type",
    pattern="a",
    options={"--payload-filter": "[" * 100_000},
    switches=[],
)
def test_cli_subscriptions_add_with_any_arguments(
    invoke: Any,
    db: psycopg.Connection[Any],
    run_id: str,
    only: str,
    suffix: str,
    mode: str,
    free: str,
    pattern: str,
    options: dict[str, str],
    switches: list[str],
) -> None:
    client_id = f"{run_id}-{next(_sequence)}{suffix}"
    fixed = "--namespace" if free == "--type" else "--type"
    args = ["--json", "subscriptions", "add", client_id, "--mode", mode, free, pattern, fixed, only]
    for option, value in options.items():
        args += [option, value]
    args += switches
    count_sql = "SELECT count(*) AS n FROM subscriptions WHERE starts_with(client_id, %s)"
    before = db.execute(count_sql, (run_id,)).fetchone()["n"]
    result = invoke(*args)
    assert_clean_exit(result)
    if result.exit_code != 0:
        assert db.execute(count_sql, (run_id,)).fetchone()["n"] == before
        return
    shown = json.loads(result.stdout)
    try:
        row = stored_subscription(db, shown["id"])
        assert row["client_id"] == client_id and row["delivery_mode"] == mode
        stored = {"--type": row["message_type"], "--namespace": row["namespace"]}
        assert stored[free] == expected_pattern(pattern) and stored[fixed] == only
        if "--url" in options:
            assert row["webhook_url"] == options["--url"]
        if "--channel" in options and mode != "notify":
            assert row["notify_channel"] == options["--channel"]
        assert ("signing_secret" in shown) == ("--show-secrets" in switches)
    finally:
        db.execute("DELETE FROM subscriptions WHERE id = %s", (shown["id"],))


LISTINGS = [
    ("subscriptions", "list", "--client"),
    ("deliveries", "list", "--client"),
    ("deliveries", "stats", "--client"),
    ("dead-letters", "list", "--client"),
    ("deliveries", "list", "--since"),
    ("deliveries", "stats", "--since"),
    ("deliveries", "list", "--status"),
    ("deliveries", "list", "--message-id"),
    ("deliveries", "list", "--limit"),
]


@BAD_INPUT
@given(
    listing=st.sampled_from(LISTINGS),
    value=st.one_of(
        cli_text,
        st.builds(lambda s: "PREFIX" + s, cli_text),
        st.one_of(st.integers(-5, 5), st.integers(2**31, 2**80), st.integers(-(2**80), -(2**31))).map(str),
    ),
)
@example(listing=("subscriptions", "list", "--client"), value="\x00")
@example(listing=("deliveries", "list", "--client"), value="a\x00")
@example(listing=("deliveries", "list", "--since"), value="1" + "0" * 400 + "d")
@example(listing=("deliveries", "stats", "--since"), value="99999999999999999999w")
@example(listing=("deliveries", "list", "--message-id"), value=str(2**64))
@example(listing=("dead-letters", "list", "--client"), value="x\udcff")
def test_cli_listing_filters_with_any_text(
    invoke: Any, run_id: str, listing: tuple[str, str, str], value: str
) -> None:
    value = value.replace("PREFIX", run_id)
    result = invoke("--json", *listing, value)
    assert_clean_exit(result)
    if result.exit_code == 0:
        rows = json.loads(result.stdout)
        assert isinstance(rows, list)
        if listing[2] == "--client":
            assert all(r["client_id"] == value for r in rows)


@BAD_INPUT
@given(
    content=st.one_of(
        st.binary(max_size=200), payload_texts.map(lambda t: t.encode("utf-8", "surrogatepass"))
    ),
    source=st.sampled_from(["file", "stdin"]),
)
@example(content=b"\xff\xfe{}", source="file")
@example(content=b'{"a": "\xc3"}', source="stdin")
@example(content=b"\x00", source="file")
def test_cli_publish_payload_from_any_file_or_stdin(
    invoke: Any,
    db: psycopg.Connection[Any],
    run_id: str,
    tmp_path_factory: pytest.TempPathFactory,
    content: bytes,
    source: str,
) -> None:
    """Bytes that are not UTF-8, not JSON, or JSON pgmsg cannot store, from --file or stdin."""
    message_type = f"{run_id}.f{next(_sequence)}"
    after = since(db)
    if source == "file":
        path = tmp_path_factory.mktemp("payload") / "payload.json"
        path.write_bytes(content)
        result = CliRunner().invoke(
            cli,
            ["--json", "publish", message_type, "--file", str(path)],
            env={"PGMSG_DSN": invoke.dsn},
            catch_exceptions=True,
        )
    else:
        result = CliRunner().invoke(
            cli,
            ["--json", "publish", message_type, "-"],
            input=content,
            env={"PGMSG_DSN": invoke.dsn},
            catch_exceptions=True,
        )
    assert_clean_exit(result)
    if result.exit_code == 0:
        message_id = json.loads(result.stdout)["id"]
        try:
            expected = json_text(json.loads(content.decode("utf-8")))
            assert expected is not None
            assert db.execute(
                "SELECT payload = %s::jsonb AS same FROM messages WHERE id = %s", (expected, message_id)
            ).fetchone()["same"]
        finally:
            db.execute("DELETE FROM messages WHERE id = %s", (message_id,))
    else:
        assert count_new(db, after, "message_type = %s", (message_type,)) == 0
