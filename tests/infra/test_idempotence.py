"""A second deploy changes nothing."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import INVENTORY

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.deploy
def test_second_site_run_reports_no_change() -> None:
    playbook = Path(sys.executable).with_name("ansible-playbook")
    before = containers()
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
    blocks = changed_tasks(run.stdout)
    # The names last: a report that keeps only the end of a long message still shows them.
    assert not changed_hosts, "\n".join(
        [
            *changed_hosts,
            "",
            *blocks,
            "",
            "changed:",
            *(b.splitlines()[0] for b in blocks),
            "containers that differ from before the run (secrets hashed):",
            *container_changes(before, containers()),
        ]
    )


def changed_tasks(output: str) -> list[str]:
    """The output of each task or handler that reported a change (with the diff --diff
    printed for it, cut at 1,500 characters): what a failure has to name."""
    return [
        block[:1500]
        for block in re.split(r"^(?=TASK \[|RUNNING HANDLER \[)", output, flags=re.MULTILINE)
        if re.search(r"^changed:", block, re.MULTILINE)
    ]


def containers() -> dict[str, dict[str, Any]]:
    """What a deploy may change in each container, with every environment value hashed (the
    services' tasks hide their output behind no_log, so a failure shows the difference here)."""
    ids = subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return {}
    found = json.loads(
        subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout
    )
    return {
        c["Name"].lstrip("/"): {
            "id": c["Id"][:12],
            "image": c["Config"]["Image"],
            "status": c["State"]["Status"],
            "started": c["State"]["StartedAt"],
            "restarts": c["RestartCount"],
            "env": sorted(
                e.split("=", 1)[0] + "=" + hashlib.sha256(e.encode()).hexdigest()[:8]
                for e in c["Config"]["Env"] or []
            ),
            "labels": c["Config"]["Labels"],
            "mounts": sorted(f"{m.get('Source')}:{m.get('Destination')}" for m in c["Mounts"]),
        }
        for c in found
    }


def container_changes(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old is None or new is None:
            lines.append(f"{name}: {'created' if old is None else 'removed'}")
            continue
        for key in old:
            if old[key] != new[key]:
                if isinstance(old[key], list):
                    lines.append(
                        f"{name} {key}: -{sorted(set(old[key]) - set(new[key]))} +{sorted(set(new[key]) - set(old[key]))}"
                    )
                else:
                    lines.append(f"{name} {key}: {str(old[key])[:200]} -> {str(new[key])[:200]}")
    return lines
