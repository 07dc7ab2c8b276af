"""Failure modes every command shares, the help texts, and the python -m entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import click
import psycopg
import pytest
from click.testing import CliRunner, Result

from pgmsg import Client
from pgmsg.cli import cli

Run = Callable[..., Result]
UNREACHABLE = "host=127.0.0.1 port=1 dbname=x connect_timeout=2"
INJECTION = "x'; DROP TABLE messages; --"


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, (*prefix, name)))
    return found


@pytest.mark.parametrize(
    "args",
    [
        ("publish", "t.e", "{}"),
        ("subscriptions", "list"),
        ("deliveries", "stats"),
        ("dead-letters", "list"),
        ("retry",),
        ("replay", "someone", "--from-id", "1", "--yes"),
        ("archive", "--older-than", "30d"),
        ("migrate", "status"),
    ],
)
def test_unreachable_database_is_a_clear_error_with_exit_1(args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, ["--dsn", UNREACHABLE, *args])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: cannot connect to the messaging database: ")
    assert "Connection refused" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("--json", "subscriptions", "list"),
        ("deliveries", "list", "--json"),
        ("deliveries", "stats", "--json"),
        ("dead-letters", "list", "--json"),
        ("publish", "t.e", "{}", "--json"),
        ("retry", "--json"),
        ("migrate", "status", "--json"),
        ("deferred", "status", "--json"),
    ],
)
def test_json_commands_print_a_json_error_when_the_database_is_unreachable(args: tuple[str, ...]) -> None:
    """A program reading stdout gets an error object, not an empty stdout and a text on stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "pgmsg.cli", "--dsn", UNREACHABLE, *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "unreachable"
    assert error["message"].startswith("cannot connect to the messaging database: ")
    assert "Connection refused" in error["message"] and "PGMSG_DSN" in error["hint"]
    assert result.stderr.startswith("Error: cannot connect")  # people still read it there


def test_json_errors_for_bad_input_and_unknown_names(run: Run, run_id: str) -> None:
    bad = run("publish", "not a type!", "{}", "--json")
    assert bad.exit_code == 1 and json.loads(bad.stdout)["error"]["kind"] == "invalid-input"
    missing = run("--json", "subscriptions", "pause", run_id + "-none")
    assert missing.exit_code == 1
    assert json.loads(missing.stdout)["error"] == {
        "kind": "not-found",
        "message": f"no subscription for client {run_id + '-none'!r}; "
        "see `pgmsg subscriptions list` for the clients there are",
        "hint": None,
    }
    usage = run("deliveries", "list", "--since", "yesterday", "--json")
    assert usage.exit_code == 2 and json.loads(usage.stdout)["error"]["kind"] == "usage"
    malformed = run("--dsn", "host=127.0.0.1 port", "--json", "subscriptions", "list")
    assert malformed.exit_code == 1 and json.loads(malformed.stdout)["error"]["kind"] == "invalid-input"
    # Without --json, stdout stays empty: errors go to stderr only.
    assert run("subscriptions", "pause", run_id + "-none").stdout == ""


def test_dsn_from_environment_and_libpq_variables(dsn: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    env = {
        "PGMSG_DSN": "",
        "PGHOST": str(params["host"]),
        "PGPORT": str(params["port"]),
        "PGUSER": str(params["user"]),
        "PGPASSWORD": str(params["password"]),
        "PGDATABASE": "",
    }
    # No PGMSG_DSN, no PGDATABASE: libpq's PG* variables and the database 'messaging'.
    result = CliRunner().invoke(cli, ["deliveries", "list", "--limit", "1", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.stdout), list)


def test_malformed_dsn(run: Run) -> None:
    result = CliRunner().invoke(cli, ["--dsn", "host=127.0.0.1 port", "subscriptions", "list"])
    assert result.exit_code == 1 and "invalid connection string" in result.output


def test_sql_injection_through_arguments_is_harmless(
    run: Run, db: psycopg.Connection[Any], client: Client, run_id: str
) -> None:
    for args in [
        ("subscriptions", "pause", INJECTION),
        ("replay", INJECTION, "--from-id", "1", "--yes"),
        ("subscriptions", "remove", INJECTION, "--yes"),
        ("retry", "--client", INJECTION),
        ("dead-letters", "redrive", "--client", INJECTION, "--yes"),
    ]:
        result = run(*args)
        assert result.exit_code == 1, args
        assert f"no subscription for client {INJECTION!r}" in result.output
    for args in [
        ("deliveries", "list", "--client", INJECTION),
        ("dead-letters", "list", "--client", INJECTION),
        ("deliveries", "stats", "--client", INJECTION),
        ("subscriptions", "list", "--client", INJECTION),
    ]:
        result = run(*args, "--json")
        assert result.exit_code == 0 and json.loads(result.stdout) == [], args
    refused = run("subscriptions", "add", INJECTION, "--mode", "async")
    assert refused.exit_code == 1 and "invalid client_id" in refused.output
    published = run("publish", INJECTION, '{"a": "\'); DROP TABLE messages; --"}')
    assert published.exit_code == 1 and "message_type" in published.output
    health = run("health", "--client", INJECTION, "--check", "pending", "--check", "dead-letters")
    assert health.exit_code == 0
    assert db.execute("SELECT to_regclass('public.messages') IS NOT NULL AS present").fetchone()["present"]
    # Payload text with quotes is data, stored as given.
    client.subscribe(run_id + "-inj", "async", message_type=run_id + ".*")
    stored = run("publish", run_id + ".e", json.dumps({"note": INJECTION}))
    assert client.message(int(stored.stdout))["payload"] == {"note": INJECTION}


@pytest.mark.parametrize("path", all_commands())
def test_every_command_documents_itself_with_examples(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output, path
    command = cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts} has no help"


def test_python_dash_m_entry_point(dsn: str) -> None:
    env = {"PGMSG_DSN": dsn, "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(
        [sys.executable, "-m", "pgmsg.cli", "deliveries", "list", "--limit", "1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert isinstance(json.loads(ok.stdout), list)
    down = subprocess.run(
        [sys.executable, "-m", "pgmsg.cli", "--dsn", UNREACHABLE, "health"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert down.returncode == 3
    assert "cannot connect to the messaging database" in down.stderr and down.stdout == ""
