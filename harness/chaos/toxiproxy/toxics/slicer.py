"""``slicer``: every chunk is cut into pieces of about ``average_size`` ± ``size_variation`` bytes, with ``delay``
microseconds after each piece (Toxiproxy ``toxics/slicer.go``).

The cut is Go's repeated halving: a span longer than ``average_size + size_variation`` is split near its middle (the
middle moved by a uniform draw in ``[-size_variation, size_variation)``) and both halves are cut again. So 100 bytes
with average 10 and variation 0 arrive as 16 pieces of 6 or 7 bytes, not 10 pieces of 10. The pause runs from when a
piece leaves (Go sends, then sleeps). Degenerate settings that would recurse for ever in Go (average 0) stop at
one-byte pieces. Removing or updating the toxic hands the remaining pieces on at once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from random import Random

from harness.chaos.toxiproxy.toxics.base import Chunk, Item, Scheduled, Toxic, ToxicState


@dataclass(frozen=True)
class Slicer(Toxic):
    type_name = "slicer"
    average_size: int = 0  # bytes
    size_variation: int = 0  # bytes
    delay: int = 0  # µs between pieces

    def start(self, now: float, rng: Random) -> ToxicState:
        return SlicerState(self, rng)


def cut(size: int, average: int, variation: int, rng: Random) -> list[int]:
    """Offsets ``[0, a, b, ..., size]`` of the pieces of a ``size``-byte chunk (Go's ``SlicerToxic.chunk``)."""
    bounds: list[int] = []

    def split(start: int, end: int) -> None:
        if (end - start) - average <= variation or end - start <= 1:
            bounds.append(end)
            return
        mid = start + (end - start) // 2
        if variation > 0:
            mid += rng.randrange(variation * 2) - variation
        mid = min(max(mid, start + 1), end - 1)
        split(start, mid)
        split(mid, end)

    split(0, size)
    return [0, *bounds]


class SlicerState(Scheduled):
    def __init__(self, toxic: Slicer, rng: Random) -> None:
        super().__init__()
        self._toxic = toxic
        self._rng = rng
        self._gap = toxic.delay / 1_000_000.0
        self._next_at = float("-inf")  # when the next piece may leave

    def schedule(self, item: Item, now: float) -> None:
        if not isinstance(item, Chunk):
            self.hold(item, float("-inf"))
            return
        offsets = cut(len(item.data), self._toxic.average_size, self._toxic.size_variation, self._rng)
        for start, end in itertools.pairwise(offsets):
            self.hold(Chunk(item.data[start:end], item.at), float("-inf"))

    def pull(self, now: float) -> list[Item]:
        if self._gap <= 0:
            return super().pull(now)
        # One piece per gap: the queue's release times are all "now"; the pacing is here.
        out: list[Item] = []
        while self._queue and now >= self._next_at:
            out.extend(self._pop_one())
            if isinstance(out[-1], Chunk):
                self._next_at = now + self._gap
        return out

    def _pop_one(self) -> list[Item]:
        _, item = self._queue.popleft()
        if isinstance(item, Chunk):
            self._held -= len(item.data)
        return [item]

    def deadline(self) -> float | None:
        if not self._queue:
            return None
        return self._next_at if self._gap > 0 else float("-inf")
