"""The dispatcher refuses settings that would silently stop or duplicate deliveries.

A careless operator's zero or negative value: no request slot (nothing is ever pushed), or a
lease that lapses at once (another dispatcher sends the same webhook-id at the same time).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pgmsg import InvalidInput
from pgmsg.workers.dispatcher import Dispatcher


@pytest.mark.parametrize(
    "setting",
    [
        {"workers": 0},
        {"workers": -1},
        {"per_subscription": 0},
        {"batch": 0},
        {"lease_seconds": 0},
        {"lease_seconds": -30},
        {"lease_seconds": 43201},
        {"idle_poll_seconds": 0},
        {"idle_poll_seconds": float("nan")},
    ],
)
def test_nonsense_settings_are_refused_with_what_to_give(setting: dict[str, float]) -> None:
    with pytest.raises(InvalidInput) as refused:
        Dispatcher("host=127.0.0.1 port=9 connect_timeout=1", **setting)  # type: ignore[arg-type]
    assert next(iter(setting)) in str(refused.value)


def dispatcher_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # A subprocess with a deadline: a dispatcher that accepted the value would run for ever.
    return subprocess.run(
        [sys.executable, "-m", "pgmsg.workers.dispatcher", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PGMSG_DSN": "host=127.0.0.1 port=9 connect_timeout=1", **env},
    )


@pytest.mark.parametrize("option", ["--workers", "--per-subscription", "--batch"])
@pytest.mark.parametrize("value", ["0", "-4"])
def test_the_command_refuses_them_before_starting(option: str, value: str) -> None:
    done = dispatcher_command(option, value)
    assert done.returncode == 2
    assert option in done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PGMSG_DISPATCHER_WORKERS", "0", "workers=0 is out of range"),
        ("PGMSG_DISPATCHER_PER_SUBSCRIPTION", "-1", "per_subscription=-1 is out of range"),
        ("PGMSG_DISPATCHER_BATCH", "0", "batch=0 is out of range"),
        ("PGMSG_DISPATCHER_BATCH", "lots", "--batch (PGMSG_DISPATCHER_BATCH) must be a number, not 'lots'"),
    ],
)
def test_the_environment_the_deployment_sets_is_checked_too(variable: str, value: str, message: str) -> None:
    done = dispatcher_command(**{variable: value})
    assert done.returncode == 2
    assert message in done.stderr
