"""``timeout``: no data is delivered; with ``timeout > 0`` the connection is closed after that long without data.

As Toxiproxy ``toxics/timeout.go``: the data is dropped, not held. The timer is an inactivity timer: it starts when
the toxic starts on the connection (accepted, or the toxic added or updated) and restarts whenever data arrives, so
``timeout: 500`` with data at 200 ms closes at about 700 ms. ``timeout: 0`` never closes by itself. The end of the
stream closes at once. Removing the toxic closes the connections it was acting on (Go's ``Cleanup``); updating it
restarts the timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random

from harness.chaos.toxiproxy.toxics.base import END, Item, Toxic, ToxicState


@dataclass(frozen=True)
class Timeout(Toxic):
    type_name = "timeout"
    timeout: int = 0  # ms; 0 = never

    def start(self, now: float, rng: Random) -> ToxicState:
        return TimeoutState(self, now)


class TimeoutState(ToxicState):
    def __init__(self, toxic: Timeout, now: float) -> None:
        self._timeout = toxic.timeout / 1000.0
        self._close_at = now + self._timeout if toxic.timeout > 0 else None
        self._closing = False

    def receive(self, item: Item, now: float) -> None:
        if item is END:
            self._closing = True
        elif self._close_at is not None:
            self._close_at = now + self._timeout  # dropped on the floor; the inactivity timer restarts

    def pull(self, now: float) -> list[Item]:
        if self._closing or (self._close_at is not None and now >= self._close_at):
            self._closing, self._close_at = False, None
            return [END]
        return []

    def deadline(self) -> float | None:
        if self._closing:
            return float("-inf")
        return self._close_at

    def removed(self) -> list[Item]:
        return [END]
