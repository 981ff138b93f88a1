"""``limit_data``: the connection is closed once ``bytes`` bytes have passed in this direction
(Toxiproxy ``toxics/limit_data.go``).

The chunk that crosses the limit is cut at it. ``bytes: 0`` keeps the connection open until the first data
arrives, then closes it (nothing is delivered). The count belongs to the connection and survives an update of the
toxic (a stateful toxic in Go).
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random

from harness.chaos.toxiproxy.toxics.base import END, Chunk, Item, Toxic, ToxicState


@dataclass(frozen=True)
class LimitData(Toxic):
    type_name = "limit_data"
    bytes: int = 0

    def start(self, now: float, rng: Random) -> ToxicState:
        return LimitDataState(self)


class LimitDataState(ToxicState):
    def __init__(self, toxic: LimitData) -> None:
        self._limit = toxic.bytes
        self.transmitted = 0
        self._out: list[Item] = []
        self._ended = False

    def receive(self, item: Item, now: float) -> None:
        if self._ended:
            return
        if item is END:
            self._ended = True
            self._out.append(END)
            return
        assert isinstance(item, Chunk)
        remaining = max(self._limit - self.transmitted, 0)
        data = item.data if len(item.data) <= remaining else item.data[:remaining]
        if data:
            self._out.append(Chunk(data, item.at))
            self.transmitted += len(data)
        if self._limit - self.transmitted <= 0:
            self._ended = True
            self._out.append(END)

    def pull(self, now: float) -> list[Item]:
        out, self._out = self._out, []
        return out

    def flush(self) -> list[Item]:
        return self.pull(0.0)

    def carry_from(self, old: ToxicState) -> None:
        if isinstance(old, LimitDataState):
            self.transmitted = old.transmitted
