"""Entry point: ``python -m bench [--smoke] [--rounds N] [--only GROUP ...]`` (see bench/README.md)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import peers, report, scale, scenarios, server
from bench.core import Config, Figure

#: Scenario groups in report order; each takes (dsn, cfg) and returns figures.
GROUPS = {
    "publish": scenarios.publish,
    "consume": scenarios.consume,
    "latency": scenarios.latency,
    "http": scenarios.http_push,
    "growth": scenarios.growth,
    "client": scenarios.client,
    "subscriptions": scale.subscriptions,
    "sustained": scale.sustained,
    "peers": peers.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench", description="pgmsg benchmarks against the reference and peers"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny counts and one round: proves the harness works in seconds, measures nothing",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds per figure (median and spread reported)"
    )
    parser.add_argument("--only", nargs="+", choices=sorted(GROUPS), help="run only these groups")
    parser.add_argument("--image", help="pgmsg/postgres image to use (default: the deployed one)")
    parser.add_argument(
        "--port", type=int, default=server.DEFAULT_PORT, help="port on 127.0.0.1 for the bench server"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for benchmarks.md and benchmarks.json (default docs/, or artifacts/bench-smoke/ with --smoke)",
    )
    parser.add_argument(
        "--growth-max",
        type=int,
        default=Config.growth_max,
        help="largest backlog the growth group builds, in rows (default 10,000,000; ignored with --smoke)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the bench server running afterwards")
    parser.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: rewrite benchmarks.md and the plots from the benchmarks.json in --out",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.growth_max < 10_000:
        parser.error("--growth-max must be at least 10,000 (the smallest growth size)")

    cfg = Config(smoke=args.smoke, rounds=args.rounds, growth_max=args.growth_max)
    out = args.out or (server.ROOT / ("artifacts/bench-smoke" if args.smoke else "docs"))
    if args.render:
        for path in report.rerender(out):
            print(f"bench: wrote {path}", file=sys.stderr)
        return 0
    started = time.monotonic()
    srv = server.start(args.image, args.port)
    figures: list[Figure] = []
    try:
        figures += scenarios.reference(srv.dsn, cfg, "start")
        for name, run in GROUPS.items():
            if args.only and name not in args.only:
                continue
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            group_started = time.monotonic()
            figures += run(srv.dsn, cfg)
            print(
                f"bench: {name} done in {time.monotonic() - group_started:.0f} s", file=sys.stderr, flush=True
            )
        figures += scenarios.reference(srv.dsn, cfg, "end")
    finally:
        if not args.keep:
            srv.stop()
    paths = report.write(out, figures, srv.facts, cfg, time.monotonic() - started)
    for path in paths:
        print(f"bench: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
