"""Throughput and latency figures from raw counts and samples (no I/O)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from talos.errors import InvalidArgument


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, nearest rank; NaN if none."""
    if not 0 <= q <= 100:
        raise InvalidArgument(f"q: must be between 0 and 100, got {q}")
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def cdf_points(ordered: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    """(latency, fraction at or below it) at up to ``points`` evenly spaced ranks, for charts."""
    if points < 2:
        raise InvalidArgument(f"points: must be at least 2, got {points}")
    n = len(ordered)
    if n == 0:
        return []
    step = max(1, n // points)
    ranks = [*range(step - 1, n, step)]
    if ranks[-1] != n - 1:
        ranks.append(n - 1)
    return [(float(ordered[r]), (r + 1) / n) for r in ranks]


@dataclass
class Summary:
    """The figures of one run: what the command prints and --json writes."""

    name: str
    messages: int
    bytes: int
    seconds: float
    msgs_per_s: float
    mb_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    samples: int
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in list(data.items()):
            if isinstance(value, float) and math.isnan(value):
                data[key] = None  # JSON has no NaN
        return data


def summarize(
    name: str,
    messages: int,
    nbytes: int,
    seconds: float,
    latencies_ms: Iterable[float] = (),
    errors: int = 0,
    cdf: bool = False,
) -> Summary:
    """``cdf``: also keep the latency distribution's shape (for charts) in ``extra``."""
    if seconds <= 0:
        raise InvalidArgument(f"seconds: must be > 0, got {seconds}")
    ordered = sorted(latencies_ms)
    summary = Summary(
        name=name,
        messages=messages,
        bytes=nbytes,
        seconds=seconds,
        msgs_per_s=messages / seconds,
        mb_per_s=nbytes / seconds / 1e6,
        p50_ms=percentile(ordered, 50),
        p99_ms=percentile(ordered, 99),
        p999_ms=percentile(ordered, 99.9),
        max_ms=ordered[-1] if ordered else math.nan,
        samples=len(ordered),
        errors=errors,
    )
    if cdf:
        summary.extra["cdf"] = [[round(x, 4), round(f, 4)] for x, f in cdf_points(ordered)]
    return summary


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def format_summary(summary: Summary) -> str:
    """One human line: rate, bandwidth and latency percentiles."""
    line = (
        f"{summary.name}: {summary.messages:,} msgs in {summary.seconds:.2f} s = "
        f"{summary.msgs_per_s:,.0f} msg/s, {summary.mb_per_s:.1f} MB/s; latency ms "
        f"p50 {_ms(summary.p50_ms)} p99 {_ms(summary.p99_ms)} p99.9 {_ms(summary.p999_ms)} "
        f"max {_ms(summary.max_ms)} ({summary.samples:,} samples)"
    )
    if summary.errors:
        line += f"; {summary.errors:,} errors"
    return line


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table; numbers right-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        parts = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) or value is None


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
