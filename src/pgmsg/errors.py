"""The project's exceptions: each message says what went wrong and what to do."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import PoolTimeout


class PgmsgError(Exception):
    """Base class of every error pgmsg raises."""


class ConnectionFailed(PgmsgError):
    """The database could not be reached or the connection broke."""


class InvalidInput(PgmsgError):
    """The database (or the client, before it) refused malformed input."""


class NotFound(PgmsgError):
    """The named message, delivery or subscription does not exist."""


class LeaseLost(PgmsgError):
    """An ack or nack named a lease that no longer holds: it lapsed and the delivery was
    claimed again or released (or cancelled). Nothing was changed; the current holder, or
    the next claim, completes the delivery."""


#: SQLSTATE of pgmsg_nack's refusal of a lease that no longer holds (019). A class of its
#: own ("PM"), not 55000: psycopg counts class 55 as an OperationalError, read as a lost
#: connection.
LEASE_LOST_SQLSTATE = "PM001"


_INPUT_ERRORS = (
    pgerrors.CheckViolation,
    pgerrors.NotNullViolation,
    pgerrors.UniqueViolation,
    pgerrors.ForeignKeyViolation,
    # SQLSTATE class 22, data exceptions: malformed text or JSON, numbers and dates out of
    # range, untranslatable characters; and psycopg's own refusal of values PostgreSQL
    # cannot hold (a NUL character in text), which carries no SQLSTATE.
    psycopg.DataError,
    # Class 54, program limits: an index row too large, a JSON document nested deeper
    # than the server's parser goes ("stack depth limit exceeded", 54001). These are
    # OperationalErrors to psycopg, but the input is at fault, not the connection.
    pgerrors.ProgramLimitExceeded,
    pgerrors.StatementTooComplex,
)

#: The server's "Failing row contains (...)" detail repeats the whole row: payloads of any
#: size and signing secrets. Not something to put in an error message.
_ROW_DETAIL = "Failing row contains"

#: Longest detail kept in a message; the primary message and hint are the server's own text.
MAX_DETAIL_CHARS = 200


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for naming the caller's input in a message
    (other objects by their type: their repr may be huge, or fail)."""
    if isinstance(value, str):
        text = repr(value[: limit + 1])  # not repr(value): that would copy all of a huge string
    elif isinstance(value, int | float | type(None)):
        try:
            text = repr(value)
        except ValueError:  # an integer of more digits than Python converts
            text = f"<{type(value).__name__}>"
    else:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(exc: psycopg.Error) -> str:
    """The server's message with its hint, as one line for people."""
    diag = exc.diag
    text = diag.message_primary or str(exc).strip() or type(exc).__name__
    detail = diag.message_detail
    if detail and not detail.startswith(_ROW_DETAIL):
        text += f" ({detail if len(detail) <= MAX_DETAIL_CHARS else detail[: MAX_DETAIL_CHARS - 1] + '…'})"
    if diag.message_hint:
        text += f"; hint: {diag.message_hint}"
    return text


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn psycopg and pool errors raised while doing ``action`` into pgmsg errors."""
    try:
        try:
            yield
        except psycopg.Error as exc:
            if exc.sqlstate == LEASE_LOST_SQLSTATE:
                raise LeaseLost(f"{action}: {describe(exc)}") from exc
            raise
    except PoolTimeout as exc:
        raise ConnectionFailed(
            f"{action}: no database connection could be made ({exc}); "
            "check PGMSG_DSN or the PG* environment variables and that PostgreSQL is running"
        ) from exc
    except pgerrors.NoDataFound as exc:
        raise NotFound(f"{action}: {describe(exc)}") from exc
    except _INPUT_ERRORS as exc:
        raise InvalidInput(f"{action}: {describe(exc)}") from exc
    except UnicodeEncodeError as exc:
        # A lone surrogate (what Python makes of undecodable bytes in argv or a file name)
        # cannot be sent as UTF-8: psycopg raises the codec's error as it is.
        raise InvalidInput(
            f"{action}: text is not valid Unicode ({exc.reason}: {exc.object[exc.start : exc.end]!r} "
            f"at position {exc.start})"
        ) from exc
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(
            f"{action}: {describe(exc)}; check that PostgreSQL is running and reachable"
        ) from exc
    except psycopg.Error as exc:
        raise PgmsgError(f"{action}: {describe(exc)}") from exc
