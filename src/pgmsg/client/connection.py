"""The client's core: the connection string, the pool and how connections are checked.

Every capability of :class:`pgmsg.client.Client` (publish, subscriptions, consume, ...)
borrows its connections from :meth:`ClientCore._connection`.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from pgmsg.client.codec import configure
from pgmsg.config import conninfo_from_env
from pgmsg.errors import ConnectionFailed, describe, translated

#: A pooled connection idle for longer than this is checked before it is handed out.
CHECK_AFTER_IDLE_SECONDS = 1.0

#: Pause between attempts of a consumer or a Listener to reach the database again
#: after its connection was lost (the database restarted).
RECONNECT_PAUSE_SECONDS = 0.5

#: Seconds a connection attempt may take unless the conninfo or PGCONNECT_TIMEOUT says otherwise.
#: Without it libpq would wait as long as psycopg's default (130 s) on an attempt that hangs,
#: e.g. one made through HAProxy while a cluster elects a new leader.
DEFAULT_CONNECT_TIMEOUT = 10.0

#: How :meth:`ClientCore.__init__` with ``fail_fast`` begins the error it raises.
CONNECT_FAILED = "cannot connect to the messaging database"


def with_connect_timeout(conninfo: str, seconds: float = DEFAULT_CONNECT_TIMEOUT) -> str:
    """``conninfo`` with connect_timeout set, unless it or the environment already sets one.

    Raises psycopg.ProgrammingError when ``conninfo`` is not a connection string.
    """
    if "connect_timeout" in psycopg.conninfo.conninfo_to_dict(conninfo) or os.environ.get(
        "PGCONNECT_TIMEOUT"
    ):
        return conninfo
    return psycopg.conninfo.make_conninfo(conninfo, connect_timeout=str(max(2, math.ceil(seconds))))


def is_connection_error(exc: psycopg.Error) -> bool:
    """Lost or refused connections (no SQLSTATE, or class 08), not e.g. a cancelled statement."""
    return isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith("08")
    )


class ClientCore:
    """A pool of connections to the messaging database.

    ``conninfo`` is a libpq connection string or URI; by default it comes from
    PGMSG_DSN or the PG* variables (see :mod:`pgmsg.config`). ``fail_fast`` makes
    one direct connection first, so that an unreachable database is reported at
    once with libpq's reason (:class:`~pgmsg.ConnectionFailed`), instead of after
    the pool has retried for ``connect_timeout`` seconds.
    """

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 10.0,
        fail_fast: bool = False,
    ) -> None:
        self.conninfo = with_connect_timeout(
            conninfo_from_env() if conninfo is None else conninfo, connect_timeout
        )
        if fail_fast:
            check_reachable(self.conninfo)
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._pool = ConnectionPool(
            self.conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=connect_timeout,
            # A connection that died while idle (server restart) is replaced
            # before it is handed out, not discovered by the caller's query;
            # see _check_if_idle for why only idle ones are checked.
            check=self._check_if_idle,
            kwargs={"row_factory": dict_row, "autocommit": True},
            configure=configure,
            name="pgmsg",
        )
        with translated("connecting to the messaging database"):
            self._pool.open(wait=True, timeout=connect_timeout)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; when it goes back, when is noted for _check_if_idle.

        (Not the pool's reset callback: with one, every return goes through a
        worker thread, which costs more than the check it would save.)"""
        with self._pool.connection() as conn:
            try:
                yield conn
            finally:
                self._returned[conn] = time.monotonic()

    def _check_if_idle(self, conn: psycopg.Connection[Any]) -> None:
        """Check (one round trip) a connection idle for more than CHECK_AFTER_IDLE_SECONDS.

        Checking every connection before every use doubled the round trips of a
        publish; a connection used a moment ago was alive then, and a server
        that restarts in between fails that one call with a clear error.
        """
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > CHECK_AFTER_IDLE_SECONDS:
            ConnectionPool.check_connection(conn)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_reachable(conninfo: str) -> None:
    """Connect once and hang up; ConnectionFailed with libpq's reason (as one line) when that fails."""
    try:
        psycopg.connect(conninfo, autocommit=True).close()
    except psycopg.OperationalError as exc:
        reason = " ".join(describe(exc).split())  # libpq's message spans lines
        raise ConnectionFailed(f"{CONNECT_FAILED}: {reason}") from exc
