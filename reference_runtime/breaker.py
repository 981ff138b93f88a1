"""A circuit breaker (closed -> open -> half-open -> closed), shared by every safeguard that calls something that
can fail: the recording uploader, each STT/TTS/LLM provider, the workflow worker.

Why: a dependency that is down should cost one fast "no" per call, not a timeout per call. After
``failure_threshold`` consecutive failures the breaker opens and refuses at once for ``reset_after_s``; then one
trial call is let through (half-open): success closes it, failure opens it again. The clock is injected, so tests
move time instead of sleeping. Every state change is reported to ``on_change`` (metrics: trips, current state).

Contract: ``allow()`` says whether to try now (in half-open, only one trial at a time); the caller then reports
``success()`` or ``failure()`` for every call it made. A caller never blocks on the breaker.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from harness.clock import Clock


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


StateChange = Callable[[str, BreakerState, BreakerState], None]  # (breaker name, old, new)


class CircuitBreaker:
    def __init__(self, name: str, *, clock: Clock, failure_threshold: int = 3, reset_after_s: float = 5.0,
                 on_change: StateChange | None = None) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if reset_after_s <= 0:
            raise ValueError("reset_after_s must be > 0")
        self.name = name
        self._clock = clock
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_out = False
        self.trips = 0  # times it went from closed or half-open to open

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock.now() - self._opened_at >= self.reset_after_s:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_out:
            self._trial_out = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._trial_out = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        self._trial_out = False
        if self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock.now()
        self._failures = 0
        self.trips += 1
        self._set(BreakerState.OPEN)

    def _set(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_change is not None:
            self._on_change(self.name, old, new)
