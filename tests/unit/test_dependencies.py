"""The locked dependencies and what the packaging promises, checked without services.

pyproject.toml -> uv.lock -> requirements/*.txt (scripts/lock.sh); pip installs the exports
with --require-hashes, so a dependency edited in one place and not re-locked would be installed
at the old pin, or not at all."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_uv_lock_is_current_with_pyproject() -> None:
    # --offline: a lock that satisfies pyproject.toml needs no index to say so.
    checked = subprocess.run(
        [UV, "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, (
        f"uv.lock is out of date with pyproject.toml: run scripts/lock.sh\n{checked.stderr}"
    )


def test_requirement_files_are_the_export_of_the_lock(tmp_path: Path) -> None:
    subprocess.run([ROOT / "scripts" / "lock.sh", "--export-to", tmp_path], check=True, capture_output=True)
    exported = {p.name: p.read_text() for p in tmp_path.glob("*.txt")}
    committed = {p.name: p.read_text() for p in (ROOT / "requirements").glob("*.txt")}
    assert sorted(committed) == sorted(exported), (
        "requirements/ holds other files than scripts/lock.sh writes"
    )
    stale = [name for name in exported if exported[name] != committed[name]]
    assert not stale, f"requirements/{', '.join(stale)} differ from uv.lock: run scripts/lock.sh"


def test_every_requirement_is_pinned_with_a_hash() -> None:
    for path in (ROOT / "requirements").glob("*.txt"):
        # One block per requirement: "name==version [; marker] \\", its hashes, "# via" lines.
        blocks = re.split(r"\n(?=[a-z0-9])", path.read_text().split("\n", 2)[2].strip())
        assert blocks, path
        for block in blocks:
            first = block.splitlines()[0]
            assert re.match(r"[a-z0-9._-]+==[^ ;]+", first), f"{path.name}: {first} is not pinned"
            assert "--hash=sha256:" in block, f"{path.name}: {first} has no hash"


def test_the_library_depends_on_plain_psycopg_and_the_controller_brings_libpq() -> None:
    names = [re.split(r"[<>=\[ ;]", d)[0] for d in PYPROJECT["project"]["dependencies"]]
    assert "psycopg" in names and not any("[binary]" in d for d in PYPROJECT["project"]["dependencies"])
    assert "psycopg-binary==" in (ROOT / "requirements" / "deploy.txt").read_text()
    # The services image has no psycopg-binary: Debian's libpq5 serves the plain psycopg.
    assert "psycopg-binary" not in (ROOT / "requirements" / "runtime.txt").read_text()
    assert "libpq5" in (ROOT / "images" / "services" / "Dockerfile").read_text()


def test_deploying_installs_no_test_tool() -> None:
    deploy = (ROOT / "requirements" / "deploy.txt").read_text()
    for tool in ("pytest", "selenium", "hypothesis", "pytest-testinfra", "ruff", "ansible-lint"):
        assert not re.search(rf"^{tool}==", deploy, re.MULTILINE), f"deploy.txt installs {tool}"
    assert not re.search(r"^ansible==", deploy, re.MULTILINE), "deploy.txt installs every collection"


def test_every_package_of_the_source_is_in_the_wheel() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(base).parts)
        for base in (ROOT / "src", ROOT)
        for init in base.glob("*/**/__init__.py")
        if init.parent.relative_to(base).parts[0] in ("pgmsg", "services")
    }
    assert on_disk <= listed, (
        f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
    )


def used_collections() -> set[str]:
    """Collections named by a fully qualified name where Ansible or an operator reads them."""
    texts = [p.read_text() for d in ("roles", "playbooks") for p in (ROOT / d).rglob("*.yml")]
    texts += [(ROOT / name).read_text() for name in ("site.yml", "ansible.cfg", "README.md")]
    names = {
        m for text in texts for m in re.findall(r"\b((?:community|ansible)\.[a-z0-9_]+)\.[a-z0-9_]+", text)
    }
    return names - {"ansible.builtin"}


def test_requirements_yml_lists_exactly_the_collections_used() -> None:
    listed = {c["name"] for c in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]}
    used = used_collections()
    assert used - listed == set(), f"used but not in requirements.yml: {sorted(used - listed)}"
    assert listed - used == set(), f"in requirements.yml but used nowhere: {sorted(listed - used)}"
