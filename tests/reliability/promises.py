"""Every promise of the README's delivery-semantics and security sections, and the tests that
prove it from the outside (another role, a late or repeated caller, a hostile URL, a deleted
row). tests/unit/test_promises.py checks that each bullet of those sections has exactly one entry
here and that every test named exists; scripts/reliability-report.py lists them with their
latest results in docs/reliability.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
# The README headings (### level) whose every bullet is a promise.
SECTIONS = ("Async: claim, lease, ack", "HTTP push", "NOTIFY", "Roles and row-level security")


@dataclass(frozen=True)
class Promise:
    section: str
    lead: str                 # how the README bullet begins (markdown as written)
    tests: tuple[str, ...]    # pytest node ids: a function, or a parametrized one without parameters


def readme_bullets(text: str | None = None) -> dict[str, list[str]]:
    """The top-level bullets of each section in SECTIONS, continuation lines joined."""
    text = README.read_text() if text is None else text
    found: dict[str, list[str]] = {}
    section: str | None = None
    for line in text.splitlines():
        heading = re.match(r"^(#+)\s+(.*)$", line)
        if heading:
            section = heading.group(2).strip() if heading.group(2).strip() in SECTIONS else None
            if section:
                found.setdefault(section, [])
            continue
        if section is None:
            continue
        if line.startswith("- "):
            found[section].append(line[2:].strip())
        elif line.startswith("  ") and found[section] and line.strip():
            found[section][-1] += " " + line.strip()
    return found


def bullet_of(promise: Promise, bullets: dict[str, list[str]]) -> list[str]:
    return [b for b in bullets.get(promise.section, []) if b.startswith(promise.lead)]


ASYNC, HTTP, NOTIFY, ROLES = SECTIONS

PROMISES: tuple[Promise, ...] = (
)
