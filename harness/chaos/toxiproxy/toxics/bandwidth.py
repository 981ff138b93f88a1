"""``bandwidth``: at most ``rate`` KB/s (1 KB = 1000 bytes) pass, as Toxiproxy ``toxics/bandwidth.go`` does it.

Each chunk costs ``len / (rate * 1000)`` seconds of link time and leaves when its time is paid; a chunk over
``rate * 100`` bytes is cut into pieces of that size, one every 100 ms. Idle time earns no credit. ``rate: 0`` (or
less) stalls the direction for ever: it does not mean "unlimited" (and Go's negative rate panics; here it stalls too).
Updating or removing the toxic hands on what it held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from random import Random

from harness.chaos.toxiproxy.toxics.base import END, Chunk, Item, Scheduled, Toxic, ToxicState


@dataclass(frozen=True)
class Bandwidth(Toxic):
    type_name = "bandwidth"
    rate: int = 0  # KB/s

    def start(self, now: float, rng: Random) -> ToxicState:
        return BandwidthState(self)


class BandwidthState(Scheduled):
    def __init__(self, toxic: Bandwidth) -> None:
        super().__init__()
        self._rate = toxic.rate
        self._free_at = -math.inf  # when the link has paid for everything scheduled so far

    def schedule(self, item: Item, now: float) -> None:
        if self._rate <= 0:
            self.hold(item, math.inf)
            return
        self._free_at = max(self._free_at, now)
        if item is END:
            self.hold(item, self._free_at)
            return
        assert isinstance(item, Chunk)
        piece = self._rate * 100  # bytes per 100 ms
        bytes_per_second = self._rate * 1000.0
        for offset in range(0, len(item.data), piece):
            data = item.data[offset : offset + piece]
            self._free_at += len(data) / bytes_per_second
            self.hold(Chunk(data, item.at), self._free_at)
