"""pgmsg's operator command line: ``pgmsg publish``, ``pgmsg subscriptions``, ``pgmsg health``...

The root group lives in :mod:`pgmsg.cli.root`; each topic has its own module
(subscriptions, deliveries, dead letters, maintenance, health, migrations) whose
click commands stay thin over :class:`pgmsg.client.Client`, the CLI's only way to the
database: no statement is written here.
"""

from __future__ import annotations

from pgmsg.cli.root import cli, main

__all__ = ["cli", "main"]
