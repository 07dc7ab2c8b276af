"""A second deploy changes nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import INVENTORY

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.deploy
def test_second_site_run_reports_no_change() -> None:
    playbook = Path(sys.executable).with_name("ansible-playbook")
    run = subprocess.run(
        [str(playbook), "-i", str(INVENTORY), "site.yml", "--diff"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    recap = re.findall(
        r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", run.stdout, re.MULTILINE
    )
    assert recap, run.stdout[-2000:]
    changed_hosts = [f"{host}: changed={changed}" for host, changed, _, _ in recap if changed != "0"]
    assert not changed_hosts, "\n".join([*changed_hosts, "", *changed_tasks(run.stdout)])


def changed_tasks(output: str) -> list[str]:
    """The output of each task or handler that reported a change (with the diff --diff
    printed for it, cut at 2,000 characters): what a failure has to name."""
    return [
        block[:2000]
        for block in re.split(r"^(?=TASK \[|RUNNING HANDLER \[)", output, flags=re.MULTILINE)
        if re.search(r"^changed:", block, re.MULTILINE)
    ]
