"""JSON in and out of the database, and the checks the client makes of its callers' input
before anything is sent."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_loads

from pgmsg.errors import InvalidInput


def _not_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is too large for a JSON number PostgreSQL and Python share")
    return value


def parse_payload(text: str) -> Any:
    """Decode a JSON payload given as text, or raise InvalidInput saying where it is broken."""
    try:
        return json.loads(text, parse_constant=_not_json_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"payload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise InvalidInput(
            f"payload is nested too deeply to decode (Python's limit is about "
            f"{sys.getrecursionlimit()} levels)"
        ) from exc
    except ValueError as exc:  # NaN, 1e999, integers of more digits than Python converts
        raise InvalidInput(f"payload is not valid JSON: {exc}") from exc


#: 19 digits in a row: maybe an integer beyond 64 bits, which orjson would turn into a float.
#: Found by mapping every digit to "0" and everything else to a space, then looking for
#: the run: about a quarter of what the regex [0-9]{19} took, which cost more than
#: orjson's decoding of a typical payload (bench "3. Consume").
_DIGIT_RUN = b"0" * 19
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))


def decode_json(data: bytes | str) -> Any:
    """JSON from the database (jsonb, json, NOTIFY payloads), decoded.

    orjson is several times faster than the standard library, which matters
    when a claim of a hundred deliveries decodes a hundred payloads. Where it
    would differ, the standard library decodes as before, so the values are
    the same: orjson makes floats of integers beyond 64 bits (any text with
    19 digits in a row goes to the standard library) and refuses numbers
    beyond a double.
    """
    raw = data.encode() if isinstance(data, str) else data
    if _DIGIT_RUN not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def configure(conn: psycopg.Connection[Any]) -> None:
    """Decode json and jsonb columns of ``conn`` with :func:`decode_json`."""
    set_json_loads(decode_json, conn)


def _json_text(payload: Any, what: str = "payload") -> str:
    """The payload as JSON text, or InvalidInput when it cannot be (NaN, sets, objects...)."""
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} cannot be encoded as JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidInput(
            f"{what} is nested too deeply to encode as JSON (Python's limit is about "
            f"{sys.getrecursionlimit()} levels)"
        ) from exc


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: What orjson would encode differently from the standard library goes to the standard library:
#: datetimes, dataclasses and subclasses of str, int, dict and list (through _refuse).
_ORJSON_STRICT = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _payload_text(payload: Any) -> str:
    """A payload as JSON text, as _json_text makes it, about ten times sooner (bench "2. Batch
    publish": the standard library's encoding was a fifth of a batch publish's time).

    orjson writes NaN and infinities as null and refuses integers beyond 64 bits, keys that
    are not text, and nesting past 254 levels: output with a null in it, and whatever orjson
    refuses, is encoded again by _json_text, which refuses what it refused before. The only
    difference left: orjson also encodes enum members (as their value) and UUIDs (as text).
    """
    try:
        encoded = orjson.dumps(payload, default=_refuse, option=_ORJSON_STRICT)
    except TypeError:
        return _json_text(payload)
    if b"null" in encoded:
        return _json_text(payload)
    return encoded.decode()


def _check_text(name: str, value: object, *, optional: bool = False) -> None:
    """InvalidInput unless ``value`` is text (or None when optional)."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text, not {type(value).__name__}")


def _check_int(name: str, value: object) -> None:
    """InvalidInput unless ``value`` is an integer PostgreSQL's integer can hold (ranges: the database)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer, not {type(value).__name__}")
    if not -(2**31) <= value < 2**31:
        raise InvalidInput(f"{name} is out of range (more than a 32-bit integer holds)")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be True or False, not {type(value).__name__}")


def _jsonb(payload: Any, what: str = "payload") -> Jsonb:
    _json_text(payload, what)
    return Jsonb(payload)
