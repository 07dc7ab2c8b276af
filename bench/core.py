"""What every scenario shares: the run configuration, figures and their statistics, timing helpers."""

from __future__ import annotations

import multiprocessing
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: The payload every scenario publishes (about 200 bytes of JSON), and the reference inserts.
PAYLOAD: dict[str, Any] = {
    "order_id": "ord-000042",
    "customer": {"id": "cus-1337", "country": "DE"},
    "amount": 129.95,
    "currency": "EUR",
    "items": [{"sku": "SKU-1", "qty": 2}, {"sku": "SKU-7", "qty": 1}],
    "placed_at": "2026-11-27T10:00:00Z",
}


@dataclass(frozen=True)
class Config:
    """How big and how often: ``smoke`` shrinks every count so the whole run takes seconds."""

    smoke: bool = False
    rounds: int = 5
    #: The largest backlog the growth group builds (rows of messages and of deliveries).
    growth_max: int = 10_000_000

    def n(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    @property
    def repeat(self) -> int:
        return 1 if self.smoke else self.rounds


@dataclass
class Figure:
    """One measured figure: a value per round; the report gives the median and the spread.

    ``kind`` is "rate" (higher is better, per second), "latency" (milliseconds,
    lower is better) or "count" (a level such as a backlog, no ratio). ``ratio``
    is filled in by the report against the reference. ``series`` is an optional
    time series of one round, (seconds, value) pairs, for the plots.
    """

    key: str
    group: str
    title: str
    unit: str
    kind: str
    rounds: list[float] = field(default_factory=list)
    note: str = ""
    ratio: float | None = None
    series: list[tuple[float, float]] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds) if self.rounds else float("nan")

    @property
    def low(self) -> float:
        return min(self.rounds) if self.rounds else float("nan")

    @property
    def high(self) -> float:
        return max(self.rounds) if self.rounds else float("nan")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(median=self.median, min=self.low, max=self.high)
        return data


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by nearest rank; NaN for no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(fn: Callable[[], Any]) -> float:
    """Seconds fn() took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _worker(target: Callable[..., Any], args: tuple[Any, ...], barrier: Any, out: Any) -> None:
    try:
        barrier.wait()
        start = time.monotonic()
        result = target(*args)
        out.put((start, time.monotonic(), result))
    except BaseException:  # reported to the parent, which raises it
        out.put(("error", traceback.format_exc(), None))


def parallel(
    target: Callable[..., Any], args_per_worker: Sequence[tuple[Any, ...]], timeout: float = 600
) -> tuple[float, list[Any]]:
    """Run target(*args) in one process per args tuple, started together.

    Processes (spawned, not threads) so that several clients really run in
    parallel; the barrier keeps start-up out of the measurement. Returns the
    seconds from the first start to the last finish and each worker's result.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args_per_worker), timeout=120)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(target, args, barrier, out), daemon=True)
        for args in args_per_worker
    ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=timeout) for _ in procs]
        errors = [r[1] for r in results if r[0] == "error"]
        if errors:
            barrier.abort()
            raise RuntimeError("benchmark worker failed:\n" + errors[0])
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise RuntimeError(f"benchmark worker exited with {failed}")
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    return end - start, [r[2] for r in results]
