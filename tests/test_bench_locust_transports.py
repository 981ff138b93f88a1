"""bench/locust_transports.py in small: one short level per transport, each in its own gevent-patched process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.locust_transports import (
    ASYNCIO_THREAD,
    FRAME_S,
    WEBSOCKETS_SYNC,
    Level,
    available_variants,
    capacities,
    echo_agent,
    run_level,
)

CALLS = 3
HOLD_S = 2.0


@pytest.fixture(scope="module")
def agent_url() -> Iterator[str]:
    with echo_agent() as url:
        yield url


def test_the_two_websockets_variants_are_always_there() -> None:
    assert {ASYNCIO_THREAD, WEBSOCKETS_SYNC} <= set(available_variants())


@pytest.mark.parametrize("variant", available_variants())
def test_one_level_measures_paced_calls(agent_url: str, variant: str) -> None:
    level = run_level(variant, agent_url, CALLS, HOLD_S)

    assert level.error == ""
    assert level.connected == CALLS
    assert level.failed == 0 and level.dropped == 0
    expected = CALLS * HOLD_S / FRAME_S  # frames sent in the window
    assert 0.8 * expected <= level.frames <= 1.2 * expected
    assert level.echoed > 0.5 * expected  # the agent's echoes were read back
    assert level.p50_ms is not None and level.p99_ms is not None and level.max_ms is not None
    assert level.p50_ms <= level.p99_ms <= level.max_ms
    assert level.cores is not None and level.cores > 0


def test_capacity_is_the_highest_level_with_every_lower_level_held() -> None:
    def level(variant: str, calls: int, p99: float) -> Level:
        return Level(variant, calls, connected=calls, echoed=1, frames=1, p50_ms=1.0, p99_ms=p99, max_ms=p99)

    results = [level("a", 50, 1.0), level("a", 100, 9.0), level("a", 200, 4.0),
               level("b", 50, 1.0), level("b", 100, 2.0), level("c", 50, 6.0)]
    assert capacities(results) == {"a": 50, "b": 100, "c": 0}
    assert not Level("d", 10, connected=9, echoed=1, p99_ms=1.0).ok  # a call that did not connect
