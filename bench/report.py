"""The report: ratios to the reference, targets met or missed, written as Markdown and JSON."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.core import Config, Figure

ANALYSIS = Path(__file__).resolve().parent / "analysis.md"


def reference_values(figures: list[Figure]) -> tuple[float, float]:
    """The reference insert rate and round-trip latency: medians over its start and end rounds."""
    rates = [v for f in figures if f.key.startswith("reference.insert.") for v in f.rounds]
    latencies = [v for f in figures if f.key.startswith("reference.insert_latency.") for v in f.rounds]
    if not rates or not latencies:
        raise ValueError("the reference was not measured")
    return statistics.median(rates), statistics.median(latencies)


def add_ratios(figures: list[Figure]) -> tuple[float, float]:
    """Rates as a multiple of the reference rate; latencies as a multiple of its round trip."""
    ref_rate, ref_latency = reference_values(figures)
    for f in figures:
        if not f.rounds:
            continue
        f.ratio = f.median / ref_rate if f.kind == "rate" else f.median / ref_latency
    return ref_rate, ref_latency


@dataclass(frozen=True)
class Target:
    text: str
    evaluate: Callable[[dict[str, Figure]], tuple[float | None, bool | None, str]]


def _median(by_key: dict[str, Figure], key: str) -> float | None:
    f = by_key.get(key)
    return f.median if f and f.rounds else None


def _ratio(by_key: dict[str, Figure], key: str) -> float | None:
    f = by_key.get(key)
    return f.ratio if f and f.rounds else None


def _best(by_key: dict[str, Figure], prefix: str, attr: str = "ratio") -> tuple[str, float] | None:
    found = [
        (k, getattr(f, attr) if attr == "ratio" else f.median)
        for k, f in by_key.items()
        if k.startswith(prefix) and f.rounds
    ]
    return max(found, key=lambda kv: kv[1]) if found else None


def _at_least(key: str, bound: float, use_ratio: bool = True) -> Callable[[dict[str, Figure]], Any]:
    def check(by_key: dict[str, Figure]) -> tuple[float | None, bool | None, str]:
        value = _ratio(by_key, key) if use_ratio else _median(by_key, key)
        return value, None if value is None else value >= bound, key

    return check


def _at_most(key: str, bound: float) -> Callable[[dict[str, Figure]], Any]:
    def check(by_key: dict[str, Figure]) -> tuple[float | None, bool | None, str]:
        value = _median(by_key, key)
        return value, None if value is None else value <= bound, key

    return check


def _consume_ratio(by_key: dict[str, Figure]) -> tuple[float | None, bool | None, str]:
    best = _best(by_key, "consume.batch100.")
    if best is None:
        return None, None, "consume.batch100.*"
    return best[1], best[1] >= 8, best[0]


def _consume_vs_pgqueuer(by_key: dict[str, Figure]) -> tuple[float | None, bool | None, str]:
    ours = _best(by_key, "consume.batch100.", "median")
    theirs = _best(by_key, "pgqueuer.worker.", "median")
    if ours is None or theirs is None:
        return None, None, "consume.batch100.* / pgqueuer.worker.*"
    value = ours[1] / theirs[1]
    return value, value >= 2, f"{ours[0]} / {theirs[0]}"


def _relative(numerator: str, denominator: str, check: Callable[[float], bool]) -> Callable[..., Any]:
    def evaluate(by_key: dict[str, Figure]) -> tuple[float | None, bool | None, str]:
        a, b = _median(by_key, numerator), _median(by_key, denominator)
        if a is None or not b:
            return None, None, f"{numerator} / {denominator}"
        return a / b, check(a / b), f"{numerator} / {denominator}"

    return evaluate


TARGETS = [
    # Deferred fan-out (message_inbox) is the publish mode made for these two; the fan-out in
    # the publishing transaction, the default, is measured against the same lines. Deferred rates are
    # judged against the reference measured beside the fan-out worker, as they were.
    Target(
        "publish >= 0.80 x reference (deferred fan-out)",
        _relative("publish.deferred.1_client", "reference.beside_fan_out.insert", lambda r: r >= 0.8),
    ),
    Target(
        "batch publish >= 15 x reference (deferred fan-out)",
        _relative("publish.deferred.batch_1000", "reference.beside_fan_out.insert", lambda r: r >= 15),
    ),
    Target(
        "publish >= 0.80 x reference (fan-out in the publishing transaction)",
        _at_least("publish.1_client", 0.80),
    ),
    Target(
        "batch publish >= 15 x reference (fan-out in the publishing transaction)",
        _at_least("publish.batch_1000", 15),
    ),
    Target("consume, batch 100, full semantics >= 8 x reference", _consume_ratio),
    Target("consume, batch 100 >= 2 x PgQueuer's best configuration", _consume_vs_pgqueuer),
    # Latency targets are taken from the commit (the publish call's return) to the consumer:
    # the publish's own duration is a figure of its own (http.publish_p99.none); the
    # figures from the start of the call are in the tables too.
    Target("end-to-end latency p50 <= 2 ms (from commit)", _at_most("latency.e2e.commit.p50", 2)),
    Target("end-to-end latency p99 <= 10 ms (from commit)", _at_most("latency.e2e.commit.p99", 10)),
    Target("NOTIFY p99 <= 2 ms idle (from commit)", _at_most("latency.notify_idle.commit.p99", 2)),
    Target(">= 1,000 signed webhooks/s", _at_least("http.webhooks", 1000, use_ratio=False)),
    Target(
        "publish p99 with a 2 s webhook <= 1.2 x without",
        _relative("http.publish_p99.slow", "http.publish_p99.none", lambda r: r <= 1.2),
    ),
    Target(
        "publish rate with 1,000,000 rows within 20% of 10,000",
        _relative("growth.publish.1m", "growth.publish.10k", lambda r: r >= 0.8),
    ),
    Target(
        "claim rate with 1,000,000 rows within 20% of 10,000",
        _relative("growth.claim.1m", "growth.claim.10k", lambda r: r >= 0.8),
    ),
]


def evaluate_targets(figures: list[Figure]) -> list[dict[str, Any]]:
    by_key = {f.key: f for f in figures}
    results = []
    for target in TARGETS:
        value, met, basis = target.evaluate(by_key)
        results.append({"target": target.text, "value": value, "met": met, "basis": basis})
    return results


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:,.2f}" if unit == "ms" or abs(value) < 10 else f"{value:,.0f}"
    return text


def markdown(
    figures: list[Figure],
    facts: dict[str, Any],
    cfg: Config,
    seconds: float,
    ref: tuple[float, float],
    targets: list[dict[str, Any]],
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        "Generated by `./bench/run.sh`"
        + (" --smoke (tiny counts: these numbers mean nothing)" if cfg.smoke else "")
        + f" on {when}; the run took {seconds / 60:.1f} minutes. Do not edit by hand: the tables are",
        "rewritten by every run; the analysis at the end comes from `bench/analysis.md`.",
        "",
        "Every rate is also given as a ratio to the **reference** measured in the same run on the same",
        "server: a raw single-row `INSERT` of the same JSON payload into a plain table, one client, one",
        "transaction per row. Latencies are given as a multiple of that INSERT's round trip. Each figure is",
        f"the median of {cfg.repeat} round{'s' if cfg.repeat > 1 else ''}; the spread is the lowest and highest round.",
        "",
        f"Reference: **{_fmt(ref[0])} rows/s**, round trip **{ref[1]:.3f} ms**.",
        "",
        "## Targets",
        "",
        "| Target | Value | Met | From |",
        "|---|---:|:---:|---|",
    ]
    for t in targets:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {_fmt(t['value'])} | {met} | `{t['basis']}` |")

    groups: dict[str, list[Figure]] = {}
    for f in figures:
        groups.setdefault(f.group, []).append(f)
    lines += ["", "## Figures", ""]
    for group in sorted(groups):
        lines += [
            f"### {group}",
            "",
            "| Figure | Median | Unit | Spread (min - max) | x reference | Key |",
            "|---|---:|---|---|---:|---|",
        ]
        for f in groups[group]:
            if not f.rounds:
                lines.append(f"| {f.title} | not measured | {f.unit} | | | `{f.key}` |")
                continue
            spread = f"{_fmt(f.low, f.unit)} - {_fmt(f.high, f.unit)}"
            lines.append(
                f"| {f.title} | {_fmt(f.median, f.unit)} | {f.unit} | {spread} | "
                f"{_fmt(f.ratio)} | `{f.key}` |"
            )
        notes = [f for f in groups[group] if f.note]
        if notes:
            lines.append("")
            lines += [f"- `{f.key}`: {f.note}" for f in notes]
        lines.append("")

    lines += [
        "## Machine and settings",
        "",
        f"- CPU: {facts.get('cpu')} ({facts.get('cores')} cores), memory {facts.get('memory_gib')} GiB, "
        f"kernel {facts.get('kernel')}",
        f"- PostgreSQL {facts.get('postgres_version')} in `{facts.get('bench_image')}` "
        f"(the project image `{facts.get('project_image')}` plus PGQ), Docker {facts.get('docker_engine')}, "
        f"{facts.get('network')}",
        f"- Clients: Python {facts.get('python')} on the same machine, one process per client",
        "- Server settings: " + ", ".join(f"`{k}={v}`" for k, v in facts.get("settings", {}).items()),
        "",
    ]
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().rstrip(), ""]
    return "\n".join(lines)


def write(out: Path, figures: list[Figure], facts: dict[str, Any], cfg: Config, seconds: float) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    ref = add_ratios(figures)
    targets = evaluate_targets(figures)
    md = out / "benchmarks.md"
    md.write_text(markdown(figures, facts, cfg, seconds, ref, targets))
    data = {
        "generated_at": datetime.now(UTC).isoformat(),
        "smoke": cfg.smoke,
        "rounds": cfg.repeat,
        "seconds": round(seconds, 1),
        "machine": facts,
        "reference": {"rows_per_second": ref[0], "round_trip_ms": ref[1]},
        "targets": targets,
        "figures": [f.as_dict() for f in figures],
    }
    js = out / "benchmarks.json"
    js.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return [md, js]


def rerender(out: Path) -> Path:
    """Rewrite benchmarks.md from benchmarks.json (after bench/analysis.md changed), same figures."""
    data = json.loads((out / "benchmarks.json").read_text())
    fields = ("key", "group", "title", "unit", "kind", "rounds", "note")
    figures = [Figure(**{k: f[k] for k in fields}) for f in data["figures"]]
    ref = add_ratios(figures)
    cfg = Config(smoke=data["smoke"], rounds=data["rounds"])
    md = out / "benchmarks.md"
    md.write_text(markdown(figures, data["machine"], cfg, data["seconds"], ref, evaluate_targets(figures)))
    return md
