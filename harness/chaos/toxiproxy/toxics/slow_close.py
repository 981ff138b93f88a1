"""``slow_close``: data passes at once; the close is held back ``delay`` ms after the end of the stream
(Toxiproxy ``toxics/slow_close.go``). Removing or updating the toxic lets a held close through at once."""

from __future__ import annotations

from dataclasses import dataclass
from random import Random

from harness.chaos.toxiproxy.toxics.base import END, Item, Scheduled, Toxic, ToxicState


@dataclass(frozen=True)
class SlowClose(Toxic):
    type_name = "slow_close"
    delay: int = 0  # ms

    def start(self, now: float, rng: Random) -> ToxicState:
        return SlowCloseState(self)


class SlowCloseState(Scheduled):
    def __init__(self, toxic: SlowClose) -> None:
        super().__init__()
        self._delay = toxic.delay / 1000.0

    def schedule(self, item: Item, now: float) -> None:
        # Data waits only behind a held close, which cannot happen: nothing follows the end of a stream.
        self.hold(item, now + self._delay if item is END else float("-inf"))
