"""``python -m pgmsg.cli``: the same as the ``pgmsg`` command."""

from __future__ import annotations

from pgmsg.cli.root import main

main()
