"""A stall of the harness's event loop is noticed, timed, and caught with what the loop was doing."""

from __future__ import annotations

import asyncio
import contextlib
import time

from harness.stallwatch import StallWatch


def _blocking_work() -> None:
    time.sleep(0.5)  # the loop cannot turn: a blocking call made by mistake


async def test_a_blocked_loop_is_recorded_with_its_stack() -> None:
    events: list[tuple[str, dict]] = []
    watch = StallWatch(lambda name, fields: events.append((name, fields)), threshold_s=0.15)
    task = asyncio.create_task(watch.run())
    await asyncio.sleep(0.1)
    _blocking_work()
    await asyncio.sleep(0.1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # the machine may add a stall of its own; the one made here must be there, timed and caught in the act
    caught = [fields for name, fields in events if name == "harness_stall" and "_blocking_work" in fields["stack"]]
    assert len(caught) == 1 and 400 <= caught[0]["stalled_ms"] <= 2000
    assert watch.count == len(events) and watch.longest_s * 1000 >= caught[0]["stalled_ms"] - 0.1
    assert watch.summary()["threshold_ms"] == 150


async def test_a_turning_loop_records_nothing() -> None:
    events: list[tuple[str, dict]] = []
    # a generous threshold: a busy CI machine may delay a loop by tens of milliseconds, never by a second
    watch = StallWatch(lambda name, fields: events.append((name, fields)), threshold_s=1.0)
    task = asyncio.create_task(watch.run())
    for _ in range(20):
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert events == [] and watch.count == 0
    assert watch._thread is not None
    watch._thread.join(timeout=1.0)
    assert not watch._thread.is_alive()  # the watchdog thread ends with the heartbeat
