"""The harness's own lateness: how far behind the 20 ms grid each frame was actually sent.

Kept as a fixed-bin histogram (0.1 ms bins up to 1 s, plus an overflow count and the exact maximum) so recording a
sample is O(1) on the hot path and per-process histograms merge exactly (for many processes, later Locust workers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
