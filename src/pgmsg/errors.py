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


_INPUT_ERRORS = (
    pgerrors.CheckViolation,
    pgerrors.NotNullViolation,
    pgerrors.UniqueViolation,
    pgerrors.ForeignKeyViolation,
    pgerrors.InvalidTextRepresentation,
    pgerrors.UntranslatableCharacter,
    pgerrors.CharacterNotInRepertoire,
    pgerrors.StringDataRightTruncation,
    pgerrors.NumericValueOutOfRange,
    pgerrors.ProgramLimitExceeded,
)


def describe(exc: psycopg.Error) -> str:
    """The server's message with its hint, as one line for people."""
    diag = exc.diag
    text = diag.message_primary or str(exc).strip() or type(exc).__name__
    if diag.message_detail:
        text += f" ({diag.message_detail})"
    if diag.message_hint:
        text += f"; hint: {diag.message_hint}"
    return text


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn psycopg and pool errors raised while doing ``action`` into pgmsg errors."""
    try:
        yield
    except PoolTimeout as exc:
        raise ConnectionFailed(
            f"{action}: no database connection could be made ({exc}); "
            "check PGMSG_DSN or the PG* environment variables and that PostgreSQL is running"
        ) from exc
    except pgerrors.NoDataFound as exc:
        raise NotFound(f"{action}: {describe(exc)}") from exc
    except _INPUT_ERRORS as exc:
        raise InvalidInput(f"{action}: {describe(exc)}") from exc
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(
            f"{action}: {describe(exc)}; check that PostgreSQL is running and reachable"
        ) from exc
    except psycopg.Error as exc:
        raise PgmsgError(f"{action}: {describe(exc)}") from exc
