"""Webhooks per second through the DEPLOYED http-dispatcher, measured from outside.

Unlike the suite (bench/__main__.py, a throwaway server and a dispatcher of its own), this
talks to the local deployment (inventory/local): it starts receivers on 127.0.0.1 in a
process of their own, creates http subscriptions pointing at them as the inventory's
administrator, publishes a backlog in batches (every message goes to every endpoint: --webhooks
divided by the endpoints, 20,000 messages for one endpoint, 2,500 for eight) and times from the first publish to the last
delivery the database records as delivered (message_delivery.delivered_at), so the figure
is what the deployed dispatcher, with whatever settings it runs with, pushes and records.
Its subscriptions (client ids ``bench-webhooks-*``) are removed at the end, also after a
failure.

    .venv/bin/python bench/webhooks_deployed.py                     # 20,000 webhooks, 1 then 8 endpoints
    .venv/bin/python bench/webhooks_deployed.py --endpoints 8 --webhooks 80000 --no-verify
    .venv/bin/python bench/webhooks_deployed.py --sizes 4/16/100 16/128/100 32/256/200

``--sizes`` (per_subscription/workers/batch) measures other dispatcher sizes: for each, the
deployed container is stopped and its image run by hand with its environment and mounts and
those PGMSG_DISPATCHER_* values, then the deployed container is started again (also after a
failure). Hold the deploy lock while it runs: nothing else may redeploy meanwhile.

The receivers answer 200 to every POST on kept-alive HTTP/1.1 connections; by default
each verifies the Standard Webhooks signature (pgmsg.signing.verify, about 10 us of CPU
per webhook), and a webhook that fails verification is counted and answered 401 (the
dispatcher then retries it, so the run would not end early). The run asserts nothing about
time: it fails only when a webhook was refused or when not every delivery was delivered
within --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.rows import dict_row

from pgmsg import Client, signing
from pgmsg.errors import PgmsgError

ROOT = Path(__file__).resolve().parents[1]
INVENTORY_VARS = ROOT / "inventory" / "local" / "group_vars" / "all" / "main.yml"
CLIENT_PREFIX = "bench-webhooks-"
DEPLOYED = "http-dispatcher"
BY_HAND = "pgmsg-bench-dispatcher"
SIZES = ("PGMSG_DISPATCHER_PER_SUBSCRIPTION", "PGMSG_DISPATCHER_WORKERS", "PGMSG_DISPATCHER_BATCH")


def admin_dsn(inventory_vars: Path = INVENTORY_VARS) -> str:
    """The first administrator login of the local inventory, on its database address."""
    found = yaml.safe_load(inventory_vars.read_text())
    admin = found["messaging_schema_admins"][0]
    port = found["postgres_port"] if "{{" in str(found["pgmsg_db_port"]) else found["pgmsg_db_port"]
    return psycopg.conninfo.make_conninfo(
        host=found["pgmsg_db_host"],
        port=port,
        dbname=found["pgmsg_db_name"],
        user=admin["name"],
        password=admin["password"],
    )


# -- the receivers ------------------------------------------------------------------------


class _Endpoint:
    """One port: answers 200 to every POST, counts them and the most connections at once (the
    dispatcher opens one per request it has in flight to the endpoint, and keeps them alive)."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.accepted = 0
        self.refused = 0
        self.connections = 0
        self.most_connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.most_connections = max(self.most_connections, self.connections)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                headers: dict[str, str] = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if value:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = b"200 OK"
                if self.secret is not None:
                    try:
                        signing.verify([self.secret], headers, body)
                    except signing.WebhookVerificationError:
                        status = b"401 Unauthorized"
                if status.startswith(b"200"):
                    self.accepted += 1
                else:
                    self.refused += 1
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except asyncio.CancelledError:
            pass  # the run is over
        finally:
            self.connections -= 1
            writer.close()


def _receive(count: int, secret: str | None, ports: Any, stop: Any, out: Any) -> None:
    """Run ``count`` endpoints on one event loop until ``stop``; put their counts on ``out``."""

    async def main() -> None:
        endpoints = [_Endpoint(secret) for _ in range(count)]
        servers = [await asyncio.start_server(e.serve, "127.0.0.1", 0, backlog=256) for e in endpoints]
        ports.put([s.sockets[0].getsockname()[1] for s in servers])
        while not stop.is_set():
            await asyncio.sleep(0.05)
        out.put(
            [
                {"accepted": e.accepted, "refused": e.refused, "connections": e.most_connections}
                for e in endpoints
            ]
        )
        for s in servers:
            s.close()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    asyncio.run(main())


class Receivers:
    """``count`` endpoints in a process of their own (started on enter, counts on exit)."""

    def __init__(self, count: int, secret: str | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ports, self._out, self._stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        self._process = ctx.Process(
            target=_receive, args=(count, secret, self._ports, self._stop, self._out), daemon=True
        )
        self.urls: list[str] = []
        self.counts: list[dict[str, int]] = []

    def __enter__(self) -> Receivers:
        self._process.start()
        self.urls = [f"http://127.0.0.1:{port}/webhook" for port in self._ports.get(timeout=30)]
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.counts = self._out.get(timeout=30)
        self._process.join(timeout=10)


# -- other sizes, by hand ------------------------------------------------------------------


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def dispatcher_sized(sizes: str) -> Iterator[None]:
    """The deployed dispatcher replaced, meanwhile, by its image run with ``sizes``
    ("per_subscription/workers/batch") and otherwise its own environment and mounts."""
    [found] = json.loads(_docker("inspect", DEPLOYED))
    config, host = found["Config"], found["HostConfig"]
    env = [e for e in config["Env"] if e.partition("=")[0] not in SIZES]
    env += [f"{name}={value}" for name, value in zip(SIZES, sizes.split("/"), strict=True)]
    command = ["run", "-d", "--name", BY_HAND, "--network", host["NetworkMode"]]
    command += ["--user", config["User"]] if config.get("User") else []
    for e in env:
        command += ["-e", e]
    for mount in found["Mounts"]:
        command += ["-v", f"{mount['Source']}:{mount['Destination']}:ro"]
    _docker("stop", DEPLOYED)
    try:
        _docker(*command, config["Image"], *config["Cmd"])
        deadline = time.monotonic() + 60
        while "dispatcher started" not in _docker("logs", BY_HAND) + _stderr_of(BY_HAND):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{BY_HAND} did not start: {_stderr_of(BY_HAND)[-2000:]}")
            time.sleep(0.2)
        yield
    finally:
        subprocess.run(["docker", "rm", "-f", BY_HAND], capture_output=True)
        _docker("start", DEPLOYED)


def _stderr_of(container: str) -> str:
    return subprocess.run(["docker", "logs", container], capture_output=True, text=True).stderr


# -- one run --------------------------------------------------------------------------------


def run(
    client: Client,
    dsn: str,
    *,
    endpoints: int,
    messages: int,
    batch: int,
    verify: bool,
    timeout: float,
    max_in_flight: int | None = None,
) -> dict[str, Any]:
    """Push ``messages`` webhooks spread over ``endpoints`` subscriptions; the figures."""
    run_id = uuid.uuid4().hex[:8]
    message_type = f"bench.webhooks.{run_id}"
    secret = signing.generate_secret()
    clients = [f"{CLIENT_PREFIX}{run_id}-{i}" for i in range(endpoints)]
    with Receivers(endpoints, secret if verify else None) as receivers:
        try:
            for client_id, url in zip(clients, receivers.urls, strict=True):
                client.subscribe(
                    client_id,
                    "http",
                    message_type=message_type,
                    webhook_url=url,
                    signing_secret=secret,
                    **({} if max_in_flight is None else {"max_in_flight": max_in_flight}),
                )
            with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
                started = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]  # type: ignore[index]
                first_id = None
                for sent in range(0, messages, batch):
                    ids = client.publish_many(
                        [(message_type, {"n": n}, "bench") for n in range(sent, min(sent + batch, messages))]
                    )
                    first_id = ids[0] if first_id is None else first_id
                published = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]  # type: ignore[index]
                expected = messages * endpoints
                deadline = time.monotonic() + timeout
                while True:
                    row = conn.execute(
                        "SELECT count(*) FILTER (WHERE status = 'delivered') AS delivered,"
                        " count(*) AS total, max(delivered_at) AS last"
                        " FROM message_delivery WHERE message_id >= %s AND client_id = ANY(%s)",
                        (first_id, clients),
                    ).fetchone()
                    assert row is not None
                    if row["delivered"] >= expected or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
        finally:
            for client_id in clients:
                try:
                    client.remove_subscriptions(client_id)
                except PgmsgError as exc:  # report it and go on removing the others
                    print(f"could not remove {client_id}: {exc}", file=sys.stderr)
    seconds = (row["last"] - started).total_seconds() if row["last"] else float("nan")
    return {
        "endpoints": endpoints,
        "messages": messages,
        "webhooks": expected,
        "delivered": row["delivered"],
        "seconds": round(seconds, 3),
        "publish_seconds": round((published - started).total_seconds(), 3),
        "webhooks_per_second": round(row["delivered"] / seconds) if row["last"] else 0,
        "refused": sum(c["refused"] for c in receivers.counts),
        "accepted": sum(c["accepted"] for c in receivers.counts),
        "most_connections": max(c["connections"] for c in receivers.counts),
        "verified": verify,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PGMSG_BENCH_DSN") or None, help="default: inventory")
    parser.add_argument("--endpoints", type=int, nargs="+", default=[1, 8], help="runs, by endpoint count")
    parser.add_argument(
        "--webhooks", type=int, default=20_000, help="webhooks per run (messages: this / endpoints)"
    )
    parser.add_argument("--batch", type=int, default=500, help="messages per publish transaction")
    parser.add_argument("--no-verify", action="store_true", help="receivers skip the signature check")
    parser.add_argument("--max-in-flight", type=int, default=None, help="the subscriptions' own limit")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the deliveries")
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of a line")
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=[None],
        help="per_subscription/workers/batch of a dispatcher run by hand in place of the deployed one",
    )
    args = parser.parse_args(argv)
    dsn = args.dsn or admin_dsn()
    failed = False
    for sizes in args.sizes:
        if sizes is not None:
            print(f"per_subscription/workers/batch {sizes} (by hand, the deployed container stopped)")
        with dispatcher_sized(sizes) if sizes else contextlib.nullcontext():
            failed |= measure(args, dsn)
    return 1 if failed else 0


def measure(args: argparse.Namespace, dsn: str) -> bool:
    """The runs of ``args.endpoints``, printed; whether one failed."""
    failed = False
    with Client(dsn) as client:
        for endpoints in args.endpoints:
            result = run(
                client,
                dsn,
                endpoints=endpoints,
                messages=max(1, args.webhooks // endpoints),
                batch=args.batch,
                verify=not args.no_verify,
                timeout=args.timeout,
                max_in_flight=args.max_in_flight,
            )
            failed |= result["refused"] > 0 or result["delivered"] < result["webhooks"]
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                print(
                    f"{endpoints} endpoint(s): {result['webhooks_per_second']:,} webhooks/s "
                    f"({result['delivered']:,}/{result['webhooks']:,} delivered in {result['seconds']} s, "
                    f"published in {result['publish_seconds']} s, most connections to one endpoint "
                    f"{result['most_connections']}, refused {result['refused']})",
                    flush=True,
                )
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
