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
        [str(playbook), "-i", str(INVENTORY), "site.yml"],
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
    changed_tasks = re.findall(r"^TASK \[(.+?)\].*\n(?:.*\n)*?changed:", run.stdout, re.MULTILINE)
    assert all(changed == "0" for _, changed, _, _ in recap), (recap, changed_tasks)
