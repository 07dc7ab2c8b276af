"""Client-side checks that need no database."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pgmsg.client import _json_text, _jsonb, _payload_text, decode_json, parse_payload
from pgmsg.config import conninfo_from_env, operator_conninfo
from pgmsg.errors import InvalidInput


def test_parse_payload_accepts_json() -> None:
    assert parse_payload('{"order": 42, "items": [1, 2]}') == {"order": 42, "items": [1, 2]}


@pytest.mark.parametrize("text", ["not json", "{'single': 'quotes'}", '{"a": 1', ""])
def test_parse_payload_rejects_malformed_text_with_position(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"payload is not valid JSON: .* line 1 column \d+"):
        parse_payload(text)


@pytest.mark.parametrize("payload", [{"when": object()}, {"x": math.nan}, {1j}])
def test_unencodable_payloads_are_refused_before_the_database(payload: object) -> None:
    with pytest.raises(InvalidInput, match="payload cannot be encoded as JSON"):
        _jsonb(payload)


class Text(str):
    pass


@pytest.mark.parametrize(
    "payload",
    [
        {"order": 42, "items": [{"sku": "A", "qty": 2}], "total": 129.95, "ok": True},
        {"big": 2**70, "neg": -(2**64)},
        {1: "int key", None: "none key"},
        {"none": None},
        [[[]]],
        "text",
        -0.0,
        1e300,
        {"lone": "\ud800"},
        {"sub": Text("v")},
        {"ü€": "ü€"},
        [1] * 3,
    ],
)
def test_fast_payload_encoding_gives_the_standard_librarys_json(payload: object) -> None:
    assert json.loads(_payload_text(payload)) == json.loads(_json_text(payload))


def test_fast_payload_encoding_handles_what_orjson_cannot_as_before() -> None:
    deep: list = []
    inner = deep
    for _ in range(300):  # orjson stops at 254 levels
        inner.append([])
        inner = inner[0]
    assert json.loads(_payload_text(deep)) == deep


@pytest.mark.parametrize("payload", [{"x": math.nan}, {"x": [math.inf]}, {1j}, {"when": object()}])
def test_fast_payload_encoding_refuses_what_was_refused(payload: object) -> None:
    """orjson would write NaN and infinity as null: they are refused, as the standard library does."""
    with pytest.raises(InvalidInput, match="payload cannot be encoded as JSON"):
        _payload_text(payload)


def test_dsn_comes_from_pgmsg_dsn_first() -> None:
    env = {"PGMSG_DSN": "host=db.example port=6543", "PGDATABASE": "other"}
    assert conninfo_from_env(env) == "host=db.example port=6543"


def test_operator_default_is_the_pgmsg_service_only_when_nothing_else_says_where(tmp_path: Path) -> None:
    (tmp_path / ".pg_service.conf").write_text("[other]\nhost=x\n\n[pgmsg]\nhost=127.0.0.1\n")
    home = {"HOME": str(tmp_path)}
    assert operator_conninfo(home) == "service=pgmsg"
    assert operator_conninfo({**home, "PGMSG_DSN": "host=db"}) == "host=db"
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGSERVICE", "PGDATABASE"):
        assert operator_conninfo({**home, name: "x"}) != "service=pgmsg", name
    # PGSERVICEFILE names the file instead of ~/.pg_service.conf.
    other = tmp_path / "elsewhere.conf"
    other.write_text("[pgmsg]\n")
    assert operator_conninfo({"HOME": "/nonexistent", "PGSERVICEFILE": str(other)}) == "service=pgmsg"
    # No such section, no file, or one this user cannot read: the old default.
    (tmp_path / ".pg_service.conf").write_text("[pgmsg-other]\n")
    assert operator_conninfo(home) == "dbname=messaging"
    assert operator_conninfo({"HOME": str(tmp_path / "none")}) == "dbname=messaging"


def test_without_pgmsg_dsn_libpq_variables_apply_and_database_defaults_to_messaging() -> None:
    assert conninfo_from_env({}) == "dbname=messaging"
    assert conninfo_from_env({"PGDATABASE": "events"}) == ""


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, 2.5, "ü€", null, true]}',
        "12345678901234567890123",
        "-9223372036854775809",
        "18446744073709551616",
        '{"id": "1234567890123456789012"}',
        "1e400",
        "[1e-400]",
        '"text"',
        "[123456789012345678, -123456789012345678]",
        '{"a": "x", "n": 99999999999999999999}',
        "[0.5,1234567890123456789012345678901]",
        '{"ids": [9223372036854775807, -9223372036854775808, 18446744073709551615]}',
    ],
)
def test_database_json_decodes_as_the_standard_library_does(text: str) -> None:
    """orjson makes floats of integers beyond 64 bits and refuses numbers beyond a double."""
    for data in (text, text.encode()):
        decoded = decode_json(data)
        assert decoded == json.loads(text) and type(decoded) is type(json.loads(text))
