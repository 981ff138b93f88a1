"""The injected clock. Measurement code and the playout model take a :class:`Clock`; tests advance a
:class:`ManualClock` instead of sleeping, so timing tests are exact and never flaky on a busy machine."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic timeline (the origin is arbitrary)."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic``; shared by every call in a process so their timelines compare."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError("a clock does not go backwards")
        self._now = when
