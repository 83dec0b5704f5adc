"""One row per quality bar: metric, ours, baseline (same run), ratio, bar, pass/fail."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    metric: str
    ours: float
    baseline: float | None
    unit: str
    bar: str  # human-readable bar, e.g. ">= 0.5x baseline and >= 50 MB/s"
    passed: bool

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.ours / self.baseline


def format_table(rows: Iterable[Row]) -> str:
    header = ("metric", "ours", "baseline", "ratio", "bar", "result")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.metric,
                f"{r.ours:.3g} {r.unit}",
                "-" if r.baseline is None else f"{r.baseline:.3g} {r.unit}",
                "-" if r.ratio is None else f"{r.ratio:.2f}x",
                r.bar,
                "PASS" if r.passed else "MISS",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
