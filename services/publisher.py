"""publisher: publish the example messages (one file with -f, or every file of the folder),
then print the delivery stats of what was published, grouped by delivery mode.

A message file is JSON: {"message_type": ..., "namespace": ..., "payload": {...}, "key": optional}.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from pgmsg import Client, InvalidInput, PgmsgError, metrics
from pgmsg.logs import configure_logging

log = logging.getLogger("pgmsg.publisher")

DEFAULT_DIR = os.environ.get("PGMSG_EXAMPLES_DIR", "/opt/pgmsg/examples/messages")


def load_message(path: Path) -> dict[str, Any]:
    """Read and check one message file; InvalidInput says what is wrong with it."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot be read ({exc.strerror})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("message_type"), str):
        raise InvalidInput(f'{path.name}: needs an object with a "message_type" string')
    return data


@click.command(help=__doc__)
@click.option(
    "-f", "--file", "files", multiple=True, help="Message file name (in --dir) or path; repeatable."
)
@click.option(
    "--dir",
    "directory",
    default=DEFAULT_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder of example messages.",
)
@click.option("--dsn", envvar="PGMSG_DSN", default=None, help="Connection string (default PGMSG_DSN or PG*).")
@click.option(
    "--metrics-port",
    type=int,
    envvar="PGMSG_METRICS_PORT",
    default=None,
    help="Expose pgmsg_published_messages_total on this port while running.",
)
@click.option("--linger", type=float, default=0.0, help="Seconds to keep serving metrics after publishing.")
@click.option(
    "--wait",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds to let deliveries progress before printing the stats.",
)
@click.option(
    "--deferred",
    is_flag=True,
    help="Publish with deferred fan-out (the pgmsg-fan-out service creates the deliveries).",
)
def main(
    files: tuple[str, ...],
    directory: str,
    dsn: str | None,
    metrics_port: int | None,
    linger: float,
    wait: float,
    deferred: bool,
) -> None:
    configure_logging()
    if metrics_port:
        metrics.serve(metrics_port, os.environ.get("PGMSG_METRICS_ADDRESS", "127.0.0.1"))
    folder = Path(directory)
    paths = [Path(f) if os.sep in f else folder / f for f in files] or sorted(folder.glob("*.json"))
    if not paths:
        raise click.UsageError(f"no message files in {folder}")
    try:
        messages = [load_message(p) for p in paths]
        with Client(dsn) as client:
            ids = []
            for path, msg in zip(paths, messages, strict=False):
                namespace = msg.get("namespace", "default")
                message_id = client.publish(
                    msg["message_type"], msg.get("payload"), namespace, key=msg.get("key"), deferred=deferred
                )
                metrics.published_messages.labels(msg["message_type"], namespace).inc()
                log.info(
                    "published",
                    extra={
                        "fields": {
                            "file": path.name,
                            "message_id": message_id,
                            "message_type": msg["message_type"],
                        }
                    },
                )
                click.echo(f"published {path.name} as message {message_id} ({msg['message_type']})")
                ids.append(message_id)
            time.sleep(wait)  # let pushes and consumers act before reporting (a report, not synchronisation)
            stats = client.delivery_stats(ids)
    except PgmsgError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"\n{'mode':<8} {'status':<11} {'count':>5}")
    for row in stats:
        click.echo(f"{row['delivery_mode']:<8} {row['status']:<11} {row['count']:>5}")
    if linger:
        time.sleep(linger)


if __name__ == "__main__":
    sys.exit(main())
