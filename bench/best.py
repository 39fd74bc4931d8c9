"""Best against best: the pure choice behind every ratio of `make bench`.

Each throughput row runs every system with each process count (1 and 2 by
default). A system's figure for the row is its best count's figure, and Talos
is compared with the best peer of the row, so no system is judged at a process
count that suits another one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Best:
    """A system's best figure in one row, and the run it came from."""

    value: float
    processes: int
    key: str

    @property
    def measured(self) -> bool:
        return not math.isnan(self.value)


UNMEASURED = Best(math.nan, 0, "")


def run_key(row: str, system: str, processes: int) -> str:
    """The result key of one run, e.g. ``produce 100B talos-flush p2``."""
    return f"{row} {system} p{processes}"


def best_of(
    results: Mapping[str, Mapping[str, Any]],
    row: str,
    system: str,
    counts: Sequence[int],
    field: str = "msgs_per_s",
) -> Best:
    """The highest ``field`` among the system's runs of the row; unmeasured if none ran."""
    found = UNMEASURED
    for n in counts:
        key = run_key(row, system, n)
        value = results.get(key, {}).get(field)
        if value is None or math.isnan(float(value)):
            continue
        if not found.measured or float(value) > found.value:
            found = Best(float(value), n, key)
    return found


def single(results: Mapping[str, Mapping[str, Any]], key: str, field: str) -> Best:
    """A row run once (latency at a fixed rate: one producer)."""
    value = results.get(key, {}).get(field)
    return UNMEASURED if value is None else Best(float(value), 1, key)


def best_peer(values: Mapping[str, Best], lower_is_better: bool = False) -> tuple[str, Best]:
    """The peer with the best measured figure: (its name, its best)."""
    measured = {name: b for name, b in values.items() if b.measured}
    if not measured:
        return "-", UNMEASURED
    pick = min if lower_is_better else max
    name = pick(measured, key=lambda k: measured[k].value)
    return name, measured[name]


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan
