"""The CLI runs in-process through click's CliRunner against the deployed database."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from pgmsg.cli import cli


@pytest.fixture
def run(dsn: str) -> Callable[..., Result]:
    """Invoke ``pgmsg ARGS...`` with PGMSG_DSN pointing at the deployed database."""

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(
            cli, list(args), env={"PGMSG_DSN": dsn}, input=input, catch_exceptions=False
        )

    return invoke
