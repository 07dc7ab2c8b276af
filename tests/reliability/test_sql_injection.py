"""SQL injection through every argument, option and filter of every ``pgmsg`` command.

The commands and their parameters are read from the click command tree, so a new command or
option is covered as soon as it exists (and a new command without base arguments here fails
the test instead of being skipped). Each classic injection string goes into one parameter at
a time, the others holding harmless values that name only this test's own objects.

What must hold: no traceback and no uncaught exception; exit code 0, 1 or 2 with a clear
``Error:`` line or an ordinary (often empty) result; parameters that cannot take text (numbers,
choices, durations, paths, flags) are refused with exit code 2; no call takes anywhere near
the five seconds a ``pg_sleep(5)`` would; afterwards messages, subscriptions and
message_delivery still exist, rows that were there before are all still there, and rows a
command legitimately created carry the injection string verbatim, as data (they are removed).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import click
import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg.rows import dict_row

from pgmsg.cli import cli
from pgmsg.cli.durations import Duration, DurationOrTimestamp

INJECTIONS = (
    "x'; DROP TABLE messages; --",
    "' OR '1'='1",
    "1; SELECT pg_sleep(5)",
    "'; SELECT pg_sleep(5); --",
    "'||pg_sleep(5)||'",
    "$$; DROP TABLE subscriptions; $$",
    ") OR 1=1 --",
    "\\'; TRUNCATE message_delivery; --",
    'x"; DROP TABLE messages; --',
    "1)::text; DELETE FROM subscriptions; --",
    "%' OR client_id LIKE '%",
    "\u2019; DELETE FROM subscriptions; --",  # right single quotation mark
    "\u02bc OR \u02bc1\u02bc=\u02bc1",  # modifier letter apostrophe
    "\uff07; DROP TABLE messages; --",  # fullwidth apostrophe
)

#: A pg_sleep(5) that ran would take five seconds; a call is allowed four (connecting included).
MAX_SECONDS = 4.0

#: Ids the test sessions' run_id fixtures make (tests/conftest.py): rows that concurrent tests
#: add and remove themselves (a client id, message type or filter starting with one) are left
#: out of the before/after counts.
TEST_TAG = r"^t[0-9a-f]{10}"

TABLES = ("messages", "subscriptions", "message_delivery")

#: Types that cannot carry text: the CLI must refuse an injection string with exit code 2.
NOT_TEXT = (
    click.types.IntParamType,
    click.types.FloatParamType,
    click.types.BoolParamType,
    click.Choice,
    click.Path,
    click.types.UUIDParameterType,
    click.types.DateTime,
    click.File,
    Duration,
    DurationOrTimestamp,
)

Command = tuple[str, ...]


def command_tree(group: click.Group = cli, path: Command = ()) -> Iterator[tuple[Command, click.Command]]:
    """Every command, groups included (with their own options), depth first."""
    yield path, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from command_tree(command, (*path, name))
        else:
            yield (*path, name), command


def parameters() -> list[tuple[Command, str]]:
    return [
        (path, param.name)
        for path, command in command_tree()
        for param in command.params
        if param.name is not None
    ]


def find(path: Command) -> click.Command:
    command: click.Command = cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def base_arguments(path: Command, own: dict[str, Any]) -> dict[str, Any]:
    """Harmless values for the parameters each command needs, naming this test's own objects.

    A group lists what its default subcommand needs; keys are click parameter names. A command
    missing here fails the test: add it, with arguments that touch only run_id objects.
    """
    client_id, http_id = own["client_id"], own["http_id"]
    table: dict[Command, dict[str, Any]] = {
        (): {"__then__": ("subscriptions", "list", "--client", client_id)},
        ("publish",): {"message_type": f"{own['run_id']}.inj", "payload": "{}"},
        ("subscriptions",): {"__then__": ("list", "--client", client_id)},
        ("subscriptions", "add"): {
            "client_id": f"{own['run_id']}-add",
            "delivery_mode": "async",
            "message_type": f"{own['run_id']}.none",
        },
        ("subscriptions", "list"): {"client_id": client_id},
        ("subscriptions", "pause"): {"client_id": client_id},
        ("subscriptions", "resume"): {"client_id": client_id},
        ("subscriptions", "remove"): {"client_id": client_id, "yes": True},
        ("subscriptions", "rotate-secret"): {"subscription_id": str(http_id)},
        ("subscriptions", "test"): {"subscription_id": str(http_id)},
        ("deliveries",): {"__then__": ("list", "--client", client_id)},
        ("deliveries", "list"): {"client_id": client_id},
        ("deliveries", "stats"): {"client_id": client_id},
        ("retry",): {"client_id": client_id, "yes": True},
        ("dead-letters",): {"__then__": ("list", "--client", client_id)},
        ("dead-letters", "list"): {"client_id": client_id},
        ("dead-letters", "show"): {"delivery_id": "1"},
        ("dead-letters", "redrive"): {"client_id": client_id, "yes": True},
        ("replay",): {"client_id": client_id, "from_id": str(2**62), "yes": True},
        ("deferred",): {"__then__": ("status",)},
        ("deferred", "status"): {},
        ("deferred", "failed"): {"limit": "1"},
        ("deferred", "retry"): {"ids": [str(2**62)], "yes": True},
        ("deferred", "fan-out"): {"limit": "1"},
        ("archive",): {"older_than": "36500d"},
        ("purge",): {"older_than": "36500d", "yes": True},
        ("health",): {"client_id": client_id, "only": ["pending"]},
        ("migrate",): {"__then__": ("status",)},
        ("migrate", "status"): {},
    }
    assert path in table, (
        f"pgmsg {' '.join(path)} is new: give it base arguments in base_arguments() "
        "that touch only this test's own objects"
    )
    return table[path]


def build_args(
    path: Command, command: click.Command, values: dict[str, Any], injected: str | None, injection: str
) -> list[str]:
    """The argument list of ``pgmsg PATH`` with ``values``, ``injection`` going into ``injected``."""
    args: list[str] = []
    for param in command.params:
        if param.name == injected:
            if isinstance(param, click.Option) and (param.is_flag or param.count):
                long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
                args.append(f"{long}={injection}")  # a flag takes no value: the CLI must say so
            elif isinstance(param, click.Option):
                args += [param.opts[0], injection]
            else:
                args.append(injection)
            continue
        if param.name not in values:
            continue
        value = values[param.name]
        if isinstance(param, click.Option):
            if param.is_flag:
                args += [param.opts[0]] if value else []
            else:
                for item in value if isinstance(value, list) else [value]:
                    args += [param.opts[0], item]
        else:
            args.append(value)
    if isinstance(command, click.Group):  # group options go between its name and the subcommand
        return [*path, *args, *values.get("__then__", ())]
    return [*path, *args]


@pytest.fixture
def admin(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A superuser connection of each test's own (a database restart fails one test, not the rest)."""
    return db


@pytest.fixture(scope="module")
def sentinel(dsn: str) -> Iterator[dict[str, Any]]:
    """Rows that exist before any injection and must come out of all of them untouched."""
    tag = "t" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        sub = conn.execute(
            "INSERT INTO subscriptions (client_id, delivery_mode, message_type) "
            "VALUES (%s, 'async', %s) RETURNING *",
            (tag + "-sentinel", tag + ".*"),
        ).fetchone()
        message = conn.execute(
            "INSERT INTO messages (message_type, payload) VALUES (%s, %s) RETURNING *",
            (tag + ".sentinel", json.dumps({"keep": INJECTIONS[0]})),
        ).fetchone()
        delivery = conn.execute(
            "SELECT * FROM message_delivery WHERE message_id = %s AND client_id = %s",
            (message["id"], sub["client_id"]),
        ).fetchone()
    assert delivery is not None
    yield {"subscription": sub, "message": message, "delivery": delivery}
    deadline = time.monotonic() + 60
    while True:  # removed even if the database is restarting just now
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DELETE FROM subscriptions WHERE client_id LIKE %s", (tag + "%",))
                conn.execute("DELETE FROM messages WHERE message_type LIKE %s", (tag + "%",))
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture
def own(admin: psycopg.Connection[Any], run_id: str) -> dict[str, Any]:
    """This test's own subscriptions (an async and an http one), which base arguments name."""
    client_id = f"{run_id}-own"
    admin.execute(
        "INSERT INTO subscriptions (client_id, delivery_mode, message_type) VALUES (%s, 'async', %s)",
        (client_id, f"{run_id}.none"),
    )
    http = admin.execute(
        "INSERT INTO subscriptions (client_id, delivery_mode, message_type, webhook_url) "
        "VALUES (%s, 'http', %s, 'http://127.0.0.1:9/hook') RETURNING id",
        (client_id, f"{run_id}.none"),
    ).fetchone()
    return {"run_id": run_id, "client_id": client_id, "http_id": http["id"]}


def newest_ids(db: psycopg.Connection[Any]) -> dict[str, int]:
    return db.execute(
        "SELECT (SELECT coalesce(max(id), 0) FROM messages) AS messages, "
        "(SELECT coalesce(max(id), 0) FROM subscriptions) AS subscriptions, "
        "(SELECT coalesce(max(id), 0) FROM message_delivery) AS message_delivery"
    ).fetchone()


def snapshot(db: psycopg.Connection[Any]) -> dict[str, Any]:
    """The newest id of each table, and how many rows not made by tests are at or below it."""
    ids = newest_ids(db)
    return {"ids": ids, "counts": counts(db, ids)}


def counts(db: psycopg.Connection[Any], ids: dict[str, int]) -> dict[str, int]:
    return db.execute(
        """
        SELECT (SELECT count(*) FROM messages WHERE id <= %(m)s AND message_type !~ %(tag)s) AS messages,
               (SELECT count(*) FROM subscriptions WHERE id <= %(s)s AND client_id !~ %(tag)s
                   AND message_type !~ %(tag)s AND namespace !~ %(tag)s) AS subscriptions,
               (SELECT count(*) FROM message_delivery d JOIN messages m ON m.id = d.message_id
                 WHERE d.id <= %(d)s AND d.client_id !~ %(tag)s AND m.message_type !~ %(tag)s) AS message_delivery
        """,
        {"m": ids["messages"], "s": ids["subscriptions"], "d": ids["message_delivery"], "tag": TEST_TAG},
    ).fetchone()


def assert_database_intact(
    db: psycopg.Connection[Any], before: dict[str, Any] | None, sentinel: dict[str, Any], own: dict[str, Any]
) -> None:
    """The tables exist, the rows counted before are all there, the sentinel and own rows unchanged."""
    for table in TABLES:
        assert db.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (f"public.{table}",)).fetchone()[
            "present"
        ]
    if before is not None:
        assert counts(db, before["ids"]) == before["counts"], "rows that existed before are gone"
    assert (
        db.execute("SELECT * FROM subscriptions WHERE id = %s", (sentinel["subscription"]["id"],)).fetchone()
        == sentinel["subscription"]
    )
    assert (
        db.execute("SELECT * FROM messages WHERE id = %s", (sentinel["message"]["id"],)).fetchone()
        == sentinel["message"]
    )
    assert (
        db.execute("SELECT * FROM message_delivery WHERE id = %s", (sentinel["delivery"]["id"],)).fetchone()
        == sentinel["delivery"]
    )
    mine = db.execute(
        "SELECT count(*) FILTER (WHERE active) AS active, count(*) AS total FROM subscriptions "
        "WHERE client_id = %s",
        (own["client_id"],),
    ).fetchone()
    assert mine == {"active": 2, "total": 2}, "the test's own subscriptions changed"


def created_rows(db: psycopg.Connection[Any], ids: dict[str, int], run_id: str) -> list[dict[str, Any]]:
    """Rows this test's commands created (newer than ``ids``, named with its run_id)."""
    rows = db.execute(
        "SELECT 'messages' AS tbl, id, to_jsonb(m) AS row FROM messages m "
        "WHERE id > %s AND starts_with(message_type, %s)",
        (ids["messages"], run_id),
    ).fetchall()
    rows += db.execute(
        "SELECT 'subscriptions' AS tbl, id, to_jsonb(s) AS row FROM subscriptions s "
        "WHERE id > %s AND starts_with(client_id, %s) AND client_id <> %s",
        (ids["subscriptions"], run_id, f"{run_id}-own"),
    ).fetchall()
    return rows


def holds_verbatim(value: Any, text: str) -> bool:
    if isinstance(value, str):
        return value == text or value == text.strip(" ")
    if isinstance(value, dict):
        return any(holds_verbatim(v, text) for v in value.values())
    if isinstance(value, list):
        return any(holds_verbatim(v, text) for v in value)
    return False


@pytest.fixture
def invoke(dsn: str) -> Callable[[list[str]], tuple[Result, float]]:
    def run(args: list[str]) -> tuple[Result, float]:
        started = time.monotonic()
        result = CliRunner().invoke(
            cli, args, env={"PGMSG_DSN": dsn, "PGHOST": "127.0.0.1"}, input="n\n", catch_exceptions=True
        )
        return result, time.monotonic() - started

    return run


def assert_harmless(result: Result, seconds: float, args: list[str], param: click.Parameter | None) -> None:
    where = f"pgmsg {' '.join(args)!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{where}: uncaught {type(result.exception).__name__}: {result.exception!r}"
    )
    assert "Traceback" not in result.output, where
    assert seconds < MAX_SECONDS, f"{where} took {seconds:.1f}s: did pg_sleep run?"
    # health's usage errors exit 3, unknown: monitoring reads its 2 as critical.
    usage_error = 3 if args[:1] == ["health"] else 2
    assert result.exit_code in (0, 1, 2, usage_error), f"{where}: exit {result.exit_code}: {result.output}"
    if result.exit_code != 0:
        assert [line for line in result.output.splitlines() if line.startswith("Error:")], (
            f"{where}: exit {result.exit_code} without a message: {result.output}"
        )
    if param is not None and (
        isinstance(param.type, NOT_TEXT)
        or (isinstance(param, click.Option) and (param.is_flag or param.count))
    ):
        assert result.exit_code == usage_error, (
            f"{where}: {param.name} ({param.type.name}) accepted text: {result.output}"
        )


@pytest.mark.parametrize(
    ("path", "name"), parameters(), ids=lambda v: (" ".join(v) or "pgmsg") if isinstance(v, tuple) else v
)
def test_injection_into_every_parameter_is_data(
    path: Command,
    name: str,
    invoke: Any,
    admin: psycopg.Connection[Any],
    sentinel: dict[str, Any],
    own: dict[str, Any],
    run_id: str,
) -> None:
    command = find(path)
    param = next(p for p in command.params if p.name == name)
    values = base_arguments(path, own)
    before = snapshot(admin)
    for injection in INJECTIONS:
        ids = newest_ids(admin)
        args = build_args(path, command, values, name, injection)
        result, seconds = invoke(args)
        assert_harmless(result, seconds, args, param)
        for row in created_rows(admin, ids, run_id):  # created with the string as data: checked, removed
            assert holds_verbatim(row["row"], injection), (
                f"pgmsg {args}: created {row['row']} without the string"
            )
            admin.execute(f"DELETE FROM {row['tbl']} WHERE id = %s", (row["id"],))
        assert_database_intact(admin, None, sentinel, own)
    assert_database_intact(admin, before, sentinel, own)


def test_every_command_has_base_arguments(own: dict[str, Any]) -> None:
    for path, _command in command_tree():
        base_arguments(path, own)


# -- explicit cases -----------------------------------------------------------------------


@pytest.mark.parametrize("injection", INJECTIONS)
def test_injection_strings_as_names_and_filters(
    injection: str,
    invoke: Any,
    admin: psycopg.Connection[Any],
    sentinel: dict[str, Any],
    own: dict[str, Any],
    run_id: str,
) -> None:
    before = snapshot(admin)
    # Names the database checks: refused, exit 1, the string quoted back as data.
    for args in (
        ["subscriptions", "add", injection, "--mode", "async"],
        ["publish", injection, "{}"],
        ["publish", f"{run_id}.e", "{}", "--namespace", injection],
    ):
        result, seconds = invoke(args)
        assert_harmless(result, seconds, args, None)
        assert result.exit_code == 1 and "invalid" in result.output, (args, result.output)
    # Clients that do not exist: NotFound, exit 1.
    for args in (
        ["subscriptions", "pause", injection],
        ["subscriptions", "resume", injection],
        ["subscriptions", "remove", injection, "--yes"],
        ["retry", "--client", injection],
        ["replay", injection, "--from-id", "1", "--yes"],
        ["dead-letters", "redrive", "--client", injection, "--yes"],
    ):
        result, seconds = invoke(args)
        assert_harmless(result, seconds, args, None)
        assert result.exit_code == 1 and "no subscription for client" in result.output, (args, result.output)
    # Filters: an empty result.
    for args in (
        ["subscriptions", "list", "--client", injection],
        ["deliveries", "list", "--client", injection],
        ["deliveries", "stats", "--client", injection],
        ["dead-letters", "list", "--client", injection],
    ):
        result, seconds = invoke([*args, "--json"])
        assert_harmless(result, seconds, args, None)
        assert result.exit_code == 0 and json.loads(result.stdout) == [], (args, result.output)
    result, seconds = invoke(
        ["health", "--client", injection, "--check", "pending", "--check", "dead-letters"]
    )
    assert_harmless(result, seconds, ["health"], None)
    assert "no pending or processing deliveries for" in result.output
    # A connection string: refused before anything connects.
    result, seconds = invoke(["--dsn", injection, "subscriptions", "list"])
    assert_harmless(result, seconds, ["--dsn"], None)
    assert result.exit_code == 1
    assert_database_intact(admin, before, sentinel, own)


@pytest.mark.parametrize("injection", INJECTIONS)
def test_injection_strings_stored_as_data(
    injection: str,
    invoke: Any,
    admin: psycopg.Connection[Any],
    sentinel: dict[str, Any],
    own: dict[str, Any],
    run_id: str,
) -> None:
    """Where a value is free text (payload, key, filter patterns, URL of a non-http subscription,
    channel), the string is stored exactly as given and nothing else happens."""
    before = snapshot(admin)
    published, seconds = invoke(
        ["--json", "publish", f"{run_id}.e", json.dumps({"note": injection}), "--key", injection]
    )
    assert_harmless(published, seconds, ["publish"], None)
    message = admin.execute(
        "SELECT payload, message_key FROM messages WHERE id = %s", (json.loads(published.stdout)["id"],)
    ).fetchone()
    assert message == {"payload": {"note": injection}, "message_key": injection}
    added, seconds = invoke(
        [
            "--json",
            "subscriptions",
            "add",
            f"{run_id}-inj",
            "--mode",
            "async",
            "--type",
            injection,
            "--namespace",
            f"{run_id}.none",
            "--url",
            injection,
            "--channel",
            injection[:60],
            "--payload-filter",
            json.dumps({"q": injection}),
        ]
    )
    assert_harmless(added, seconds, ["subscriptions", "add"], None)
    sub = admin.execute(
        "SELECT message_type, webhook_url, notify_channel, payload_filter FROM subscriptions WHERE id = %s",
        (json.loads(added.stdout)["id"],),
    ).fetchone()
    assert sub == {
        "message_type": injection.strip(" "),
        "webhook_url": injection,
        "notify_channel": injection[:60],
        "payload_filter": {"q": injection},
    }
    listed, seconds = invoke(["--json", "subscriptions", "list", "--client", f"{run_id}-inj"])
    assert_harmless(listed, seconds, ["subscriptions", "list"], None)
    assert [s["webhook_url"] for s in json.loads(listed.stdout)] == [injection]
    admin.execute("DELETE FROM subscriptions WHERE client_id = %s", (f"{run_id}-inj",))
    admin.execute("DELETE FROM messages WHERE message_type = %s", (f"{run_id}.e",))
    assert_database_intact(admin, before, sentinel, own)
