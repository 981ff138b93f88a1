"""``latency``: every chunk is delivered ``latency`` ± uniform ``jitter`` milliseconds after it was read.

Pipelined (Toxiproxy ``toxics/latency.go``): the delay runs from when the chunk was read, not from when the previous
chunk left, so a steady stream keeps its throughput. A chunk never overtakes the one before it, whatever its jitter.
The chunk leaves stamped with its release time, so a second latency toxic adds its delay on top. The end of the
stream follows the last chunk without delay of its own. Removing the toxic delivers what it held at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random

from harness.chaos.toxiproxy.toxics.base import END, Chunk, Item, Scheduled, Toxic, ToxicState


@dataclass(frozen=True)
class Latency(Toxic):
    type_name = "latency"
    latency: int = 0  # ms
    jitter: int = 0  # ms

    def start(self, now: float, rng: Random) -> ToxicState:
        return LatencyState(self, rng)


class LatencyState(Scheduled):
    def __init__(self, toxic: Latency, rng: Random) -> None:
        super().__init__()
        self._toxic = toxic
        self._rng = rng

    def delay(self) -> float:
        """Seconds: latency ± jitter, drawn like Go's ``rand.Int63n(jitter*2) - jitter``."""
        delay = self._toxic.latency
        if self._toxic.jitter > 0:
            delay += self._rng.randrange(self._toxic.jitter * 2) - self._toxic.jitter
        return delay / 1000.0

    def schedule(self, item: Item, now: float) -> None:
        if item is END:
            self.hold(item, float("-inf"))
        else:
            assert isinstance(item, Chunk)
            self.hold(item, item.at + self.delay())

    def released(self, item: Item, at: float, now: float) -> Item:
        if isinstance(item, Chunk) and at > item.at:
            return Chunk(item.data, at)
        return item
