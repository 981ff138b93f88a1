"""The harness's own lateness: how far behind the 20 ms grid each frame was actually sent.

Kept as a fixed-bin histogram (0.1 ms bins up to 1 s, plus an overflow count and the exact maximum) so recording a
sample is O(1) on the hot path and per-process histograms merge exactly (for many processes, later Locust workers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_BIN_S = 0.0001
_BINS = 10_000


@dataclass
class LatenessHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * _BINS)
    overflow: int = 0
    total: int = 0
    maximum: float = 0.0
    sum: float = 0.0

    def record(self, seconds: float) -> None:
        if seconds < 0:
            seconds = 0.0
        index = int(seconds / _BIN_S)
        if index < _BINS:
            self.counts[index] += 1
        else:
            self.overflow += 1
        self.total += 1
        self.sum += seconds
        if seconds > self.maximum:
            self.maximum = seconds

    def merge(self, other: LatenessHistogram) -> None:
        for i, count in enumerate(other.counts):
            if count:
                self.counts[i] += count
        self.overflow += other.overflow
        self.total += other.total
        self.sum += other.sum
        self.maximum = max(self.maximum, other.maximum)

    def percentile(self, q: float) -> float | None:
        """Upper edge of the bin holding the q-th percentile (0 < q <= 100); None when empty."""
        if self.total == 0:
            return None
        rank = q / 100.0 * self.total
        running = 0
        for i, count in enumerate(self.counts):
            running += count
            if running >= rank:
                return min((i + 1) * _BIN_S, self.maximum)
        return self.maximum

    def summary_ms(self) -> dict[str, float | int | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        return {
            "frames": self.total,
            "p50_ms": ms(self.percentile(50)),
            "p99_ms": ms(self.percentile(99)),
            "max_ms": ms(self.maximum if self.total else None),
            "mean_ms": ms(self.sum / self.total if self.total else None),
        }


def lateness_to_json(histogram: LatenessHistogram) -> dict[str, Any]:
    """A worker's lateness histogram as JSON: sparse ``[bin, count]`` pairs (a worker fills a few dozen of the 10,000
    bins), so the message a worker sends every few seconds stays small."""
    return {
        "bin_s": _BIN_S,
        "bins": [[i, count] for i, count in enumerate(histogram.counts) if count],
        "overflow": histogram.overflow,
        "total": histogram.total,
        "maximum": histogram.maximum,
        "sum": histogram.sum,
    }


def lateness_from_json(data: dict[str, Any]) -> LatenessHistogram:
    """The inverse of :func:`lateness_to_json`; raises ValueError on a histogram of another bin layout or a broken one
    (merging it would silently mix bins of different widths)."""
    if not isinstance(data, dict):
        raise ValueError("a lateness histogram is a JSON object")
    if not math.isclose(float(data.get("bin_s", -1)), _BIN_S):
        raise ValueError(f"lateness histogram bin_s {data.get('bin_s')!r} != {_BIN_S}")
    histogram = LatenessHistogram()
    for pair in data.get("bins", []):
        index, count = int(pair[0]), int(pair[1])
        if not 0 <= index < _BINS or count < 0:
            raise ValueError(f"lateness histogram bin {pair!r} out of range")
        histogram.counts[index] = count
    histogram.overflow = int(data.get("overflow", 0))
    histogram.total = int(data.get("total", 0))
    histogram.maximum = float(data.get("maximum", 0.0))
    histogram.sum = float(data.get("sum", 0.0))
    if histogram.total != sum(histogram.counts) + histogram.overflow:
        raise ValueError("lateness histogram total does not match its bins")
    return histogram
