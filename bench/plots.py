"""The report's plots, PNG files drawn with matplotlib from the figures of a run.

A plot whose figures were not measured in the run is not drawn; the report says
which and why instead of failing. matplotlib is used without pyplot (no global
state, no display): a ``matplotlib.figure.Figure`` saved with the Agg canvas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure as Canvas

from bench.core import Figure
from bench.scenarios import E2E_PERCENTILES, size_of_label


class Missing(Exception):
    """The figures a plot needs were not measured in this run."""


@dataclass(frozen=True)
class Plot:
    """A PNG file beside benchmarks.md, drawn from the figures or not drawn for ``reason``."""

    file: str
    caption: str
    path: Path | None = None
    reason: str = ""


def _medians(by_key: dict[str, Figure], prefix: str) -> dict[str, Figure]:
    """Measured figures whose key starts with ``prefix``, by the rest of their key."""
    return {k[len(prefix) :]: f for k, f in by_key.items() if k.startswith(prefix) and f.rounds}


def _by_size(by_key: dict[str, Figure], prefix: str) -> list[tuple[int, Figure]]:
    """Figures keyed ``prefix<size label>`` (10k, 1m, 0, ...), in order of size."""
    found = []
    for label, f in _medians(by_key, prefix).items():
        try:
            found.append((size_of_label(label), f))
        except ValueError:  # growth.publish.rr_held and the like
            continue
    return sorted(found, key=lambda sf: sf[0])


def _spread(ax: Axes, xs: list[float], figures: list[Figure], label: str, marker: str) -> None:
    """Medians joined by a line, each with its lowest and highest round as an error bar."""
    medians = [f.median for f in figures]
    ax.errorbar(
        xs,
        medians,
        yerr=[
            [m - f.low for m, f in zip(medians, figures, strict=True)],
            [f.high - m for m, f in zip(medians, figures, strict=True)],
        ],
        label=label,
        marker=marker,
        capsize=3,
    )


def throughput_vs_backlog(by_key: dict[str, Figure], canvas: Canvas) -> None:
    publish, claim = _by_size(by_key, "growth.publish."), _by_size(by_key, "growth.claim.")
    if len(publish) < 2 or len(claim) < 2:
        raise Missing("needs growth.publish.* and growth.claim.* at two backlog sizes at least")
    axes = canvas.subplots(1, 2)
    for ax, series, title, unit in (
        (axes[0], publish, "Publish, 1 client", "msg/s"),
        (axes[1], claim, "Claim + ack, batch 100", "deliveries/s"),
    ):
        _spread(ax, [s for s, _ in series], [f for _, f in series], title, "o")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel("messages and deliveries in the tables")
        ax.set_ylabel(unit)
        ax.grid(True, which="both", alpha=0.3)


def latency_under_load(by_key: dict[str, Figure], canvas: Canvas) -> None:
    names = [f"p{p:g}" for p in E2E_PERCENTILES]
    cases = []
    for prefix, label in (
        ("latency.e2e.commit.", "idle"),
        ("latency.e2e.loaded_1000.commit.", "under 1,000 msg/s"),
    ):
        found = _medians(by_key, prefix)
        if all(n in found for n in names):
            cases.append(([found[n] for n in names], label))
    if len(cases) < 2:
        raise Missing(f"needs latency.e2e.commit.* and latency.e2e.loaded_1000.commit.* ({', '.join(names)})")
    ax = canvas.subplots()
    for (figures, label), marker in zip(cases, "os", strict=False):
        _spread(ax, list(range(len(names))), figures, label, marker)
    ax.axhline(5, color="grey", linestyle="--", linewidth=1, label="target p99 under load (5 ms)")
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    ax.set_xlabel("percentile")
    ax.set_ylabel("ms from commit to the consumer's claim")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)


def subscriptions(by_key: dict[str, Figure], canvas: Canvas) -> None:
    forms = [
        (_by_size(by_key, f"subscriptions.{form}."), label)
        for form, label in (("publish", "1 message per transaction"), ("batch", "1,000 per transaction"))
    ]
    if any(len(series) < 2 or series[0][0] != 0 for series, _ in forms):
        raise Missing("needs subscriptions.publish.* and subscriptions.batch.*, with none (.0) and more")
    rates, relative = canvas.subplots(1, 2)
    highest = 1.0
    for (series, label), marker in zip(forms, "os", strict=True):
        counts, figures = [c for c, _ in series], [f for _, f in series]
        _spread(rates, counts, figures, label, marker)
        ratios = [f.median / figures[0].median for f in figures]
        highest = max(highest, *ratios)
        relative.plot(counts, ratios, marker=marker, label=label)
    relative.axhline(0.85, color="grey", linestyle="--", linewidth=1, label="target at 10,000 (0.85)")
    for ax, unit in ((rates, "msg/s"), (relative, "x the rate with none")):
        ax.set_xscale("symlog", linthresh=100)
        # Not the autoscaled margin, which reaches into negative counts on a symlog axis.
        ax.set_xlim(-20, 2 * forms[0][0][-1][0])
        ax.set_xlabel("subscriptions that do not match (3 that do)")
        ax.set_ylabel(unit)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    rates.set_yscale("log")
    rates.set_title("Publish rate")
    relative.set_ylim(0, max(1.3, 1.15 * highest))  # every point, and room for the legend
    relative.set_title("Relative to none")


def sustained(by_key: dict[str, Figure], canvas: Canvas) -> None:
    panels = [
        (by_key[k], title, unit)
        for k, title, unit in (
            ("sustained.e2e", "Publish and consume, batches of 100", "deliveries not yet acked"),
            ("sustained.deferred.batch_1000", "Deferred publish, batches of 1,000", "messages in the inbox"),
        )
        if k in by_key and by_key[k].series
    ]
    if not panels:
        raise Missing("needs the series of sustained.e2e or sustained.deferred.batch_1000")
    axes = canvas.subplots(1, len(panels), squeeze=False)[0]
    for ax, (f, title, unit) in zip(axes, panels, strict=True):
        ax.plot([t for t, _ in f.series], [v for _, v in f.series], marker=".")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{title}\n(last round; median of the rounds {f.median:,.0f} msg/s)")
        ax.set_xlabel("seconds into the window")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)


#: File name, caption and drawing of every plot, in report order.
PLOTS: list[tuple[str, str, Callable[[dict[str, Figure], Canvas], None]]] = [
    (
        "bench-throughput-vs-backlog.png",
        "Publish and claim rates against the size of the tables",
        throughput_vs_backlog,
    ),
    (
        "bench-latency-under-load.png",
        "End-to-end latency percentiles, idle and under 1,000 msg/s",
        latency_under_load,
    ),
    (
        "bench-subscriptions.png",
        "Publish rate against the number of subscriptions that do not match",
        subscriptions,
    ),
    ("bench-sustained.png", "Backlog over time in the sustained runs", sustained),
]


def draw(out: Path, figures: list[Figure]) -> list[Plot]:
    """Write every plot that can be drawn into ``out``; a Plot per entry of PLOTS either way.

    A plot that cannot be drawn leaves no stale file behind from an earlier run."""
    by_key = {f.key: f for f in figures}
    plots = []
    for file, caption, fn in PLOTS:
        path = out / file
        canvas = Canvas(figsize=(10, 4.5), layout="constrained")
        try:
            fn(by_key, canvas)
        except Missing as missing:
            path.unlink(missing_ok=True)
            plots.append(Plot(file, caption, reason=str(missing)))
            continue
        canvas.suptitle(caption)
        canvas.savefig(path, dpi=100)
        plots.append(Plot(file, caption, path=path))
    return plots
