"""Pack an image's build context into one tar file on the controller.

Usage: python pack_context.py OUTPUT.tar < inputs.json, where inputs.json is
{"files": [{"src": controller path, "dest": path in the context}, ...], "ca_bundle": path or ""}.
The extra CA bundle goes in as extra-ca.crt (empty when there is none). One tar, copied and
unpacked in one step, where a copy per file took a module call each.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path


def main() -> None:
    spec = json.load(sys.stdin)
    with tarfile.open(sys.argv[1], "w") as tar:
        for item in spec["files"]:
            tar.add(item["src"], arcname=item["dest"], recursive=False)
        ca = Path(spec["ca_bundle"]).read_bytes() if spec["ca_bundle"] else b""
        info = tarfile.TarInfo("extra-ca.crt")
        info.size, info.mode = len(ca), 0o644
        tar.addfile(info, io.BytesIO(ca))


if __name__ == "__main__":
    main()
