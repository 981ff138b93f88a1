from __future__ import annotations

import asyncio
import time

import pytest

from harness.clock import MonotonicClock
from harness.pacer import FRAME_S, SLOTS, Pacer


class Recorder:
    def __init__(self, frames: int) -> None:
        self.scheduled: list[float] = []
        self.frames = frames
        self.done = asyncio.Event()

    def tick(self, scheduled: float, now: float) -> None:
        self.scheduled.append(scheduled)
        if len(self.scheduled) >= self.frames:
            self.done.set()


async def test_every_call_ticks_on_its_own_absolute_20ms_grid() -> None:
    pacer = Pacer(MonotonicClock())
    calls = [Recorder(frames=10) for _ in range(SLOTS * 2)]
    firsts = [pacer.add(call) for call in calls]
    task = asyncio.create_task(pacer.run())
    try:
        await asyncio.wait_for(asyncio.gather(*(call.done.wait() for call in calls)), timeout=30)
    finally:
        task.cancel()
    for call, first in zip(calls, firsts, strict=True):
        steps = [b - a for a, b in zip(call.scheduled, call.scheduled[1:], strict=False)]
        assert steps == pytest.approx([FRAME_S] * len(steps), abs=1e-9)  # no drift, whatever the lateness
        assert call.scheduled[0] == pytest.approx(first, abs=1e-9)
    # calls are spread over the 20 slots of a frame: two per slot here
    phases = sorted(round((call.scheduled[0] % FRAME_S) / (FRAME_S / SLOTS)) % SLOTS for call in calls)
    assert phases == sorted(list(range(SLOTS)) * 2)
    assert pacer.lateness.total >= 10 * len(calls)


async def test_a_removed_call_is_not_ticked_again() -> None:
    pacer = Pacer(MonotonicClock())
    keep, gone = Recorder(frames=5), Recorder(frames=1)
    pacer.add(keep)
    pacer.add(gone)
    task = asyncio.create_task(pacer.run())
    try:
        await asyncio.wait_for(gone.done.wait(), timeout=10)
        pacer.remove(gone)
        ticks = len(gone.scheduled)
        await asyncio.wait_for(keep.done.wait(), timeout=10)
    finally:
        task.cancel()
    assert len(gone.scheduled) == ticks
    assert pacer.active == 1


async def test_a_pacer_that_starts_late_sends_the_first_frames_late_never_skips_them() -> None:
    pacer = Pacer(MonotonicClock())
    calls = [Recorder(frames=3) for _ in range(SLOTS)]
    firsts = [pacer.add(call) for call in calls]
    # the event loop is busy elsewhere (blocked on purpose): every first frame is already due when the pacer starts
    time.sleep(0.05)  # noqa: ASYNC251
    task = asyncio.create_task(pacer.run())
    try:
        await asyncio.wait_for(asyncio.gather(*(call.done.wait() for call in calls)), timeout=30)
    finally:
        task.cancel()
    for call, first in zip(calls, firsts, strict=True):
        assert call.scheduled[0] == pytest.approx(first, abs=1e-9)
    assert pacer.lateness.summary_ms()["max_ms"] >= 30  # sent late, and the lateness says so
