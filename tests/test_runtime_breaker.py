"""The circuit breaker, on a manual clock: trips after consecutive failures, refuses while open, lets one trial
through when half-open, and reports every state change."""

from __future__ import annotations

from harness.clock import ManualClock
from reference_runtime.breaker import BreakerState, CircuitBreaker


def test_opens_after_consecutive_failures_and_recovers_through_one_trial() -> None:
    clock = ManualClock()
    changes: list[tuple[str, str, str]] = []
    breaker = CircuitBreaker("stt/deepgram", clock=clock, failure_threshold=3, reset_after_s=5,
                             on_change=lambda name, old, new: changes.append((name, str(old), str(new))))
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    breaker.success()  # a success resets the count: failures must be consecutive
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state is BreakerState.OPEN and breaker.trips == 1
    assert not breaker.allow()
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.2)
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one at a time
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert changes == [("stt/deepgram", "closed", "open"), ("stt/deepgram", "open", "half_open"),
                       ("stt/deepgram", "half_open", "closed")]


def test_a_failed_trial_opens_it_again_for_a_full_period() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("s3", clock=clock, failure_threshold=1, reset_after_s=2)
    breaker.failure()
    clock.advance(2)
    assert breaker.allow()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and breaker.trips == 2
    clock.advance(1.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()
