"""The README cannot promise what no test checks: each bullet of its delivery-semantics and
security sections has an entry in tests/reliability/promises.py naming tests that exist."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT
from tests.reliability.promises import PROMISES, SECTIONS, Promise, bullet_of, readme_bullets


def test_every_section_is_in_the_readme() -> None:
    bullets = readme_bullets()
    assert set(bullets) == set(SECTIONS)
    assert all(bullets.values()), "every section states its promises as bullets"


@pytest.mark.parametrize("section", SECTIONS)
def test_every_bullet_has_exactly_one_promise_entry(section: str) -> None:
    for bullet in readme_bullets()[section]:
        entries = [p for p in PROMISES if p.section == section and bullet.startswith(p.lead)]
        assert len(entries) == 1, (
            f"README, {section}: the promise '{bullet[:90]}...' needs exactly one "
            f"entry in tests/reliability/promises.py (found {len(entries)})"
        )


@pytest.mark.parametrize("promise", PROMISES, ids=lambda p: p.lead[:40])
def test_every_entry_names_a_bullet_and_tests_that_exist(promise: Promise) -> None:
    assert len(bullet_of(promise, readme_bullets())) == 1, (
        f"no README bullet of {promise.section} begins {promise.lead!r}"
    )
    assert promise.tests, promise.lead
    for reference in promise.tests:
        path, _, function = reference.partition("::")
        source = ROOT / path
        assert source.is_file(), f"{path} does not exist"
        assert re.search(rf"^(async )?def {re.escape(function)}\(", source.read_text(), re.M), reference


def test_bullets_are_parsed_with_their_continuation_lines() -> None:
    text = "### NOTIFY\n\n- **One.** first line\n  second line\n- Two.\n\n### Other\n- not a promise\n"
    assert readme_bullets(text) == {"NOTIFY": ["**One.** first line second line", "Two."]}
