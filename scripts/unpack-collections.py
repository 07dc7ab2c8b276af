"""Unpack the collections of requirements.yml from the ansible wheel into a collections path.

    python scripts/unpack-collections.py requirements.yml ansible-X.whl collections/

The ansible package bundles ~100 collections (470 MB installed); the playbooks use a few.
Galaxy is not reachable everywhere PyPI is, so scripts/setup-controller.sh downloads the
pinned, hash-checked wheel and this keeps only what requirements.yml names, plus those
collections' own dependencies (as ansible-galaxy would install them). A version in
requirements.yml that the wheel does not carry is an error: the two pins must agree.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import yaml


def manifest(wheel: zipfile.ZipFile, name: str) -> dict:
    namespace, collection = name.split(".")
    try:
        raw = wheel.read(f"ansible_collections/{namespace}/{collection}/MANIFEST.json")
    except KeyError:
        raise SystemExit(f"unpack-collections: {wheel.filename} has no collection {name}") from None
    return json.loads(raw)["collection_info"]


def main(requirements: Path, wheel_path: Path, target: Path) -> None:
    wanted = {c["name"]: str(c["version"]) for c in yaml.safe_load(requirements.read_text())["collections"]}
    with zipfile.ZipFile(wheel_path) as wheel:
        todo, chosen = list(wanted), {}
        while todo:
            name = todo.pop()
            if name in chosen:
                continue
            info = chosen[name] = manifest(wheel, name)
            if name in wanted and info["version"] != wanted[name]:
                raise SystemExit(
                    f"unpack-collections: requirements.yml pins {name} {wanted[name]}, "
                    f"{wheel_path.name} carries {info['version']}: make the two agree"
                )
            todo.extend(info.get("dependencies") or {})
        prefixes = tuple(f"ansible_collections/{n.replace('.', '/')}/" for n in chosen)
        members = [m for m in wheel.namelist() if m.startswith(prefixes)]
        wheel.extractall(target, members)
    for name, info in sorted(chosen.items()):
        print(f"unpack-collections: {name} {info['version']}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
