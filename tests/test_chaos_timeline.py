"""The fault timeline: apply on time, roll back exactly once however the run ends, record what happened.

Driven by a manual clock whose ``sleep`` advances time, so the schedule is checked without waiting.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from harness.chaos.faults import Fault
from harness.chaos.timeline import Timeline
from harness.clock import ManualClock


class Recorder:
    """A fault action that writes what it was asked to do, with the time it was asked."""

    def __init__(self, clock: ManualClock, log: list[tuple[float, str]], name: str, *, fail_apply: bool = False,
                 fail_rollback: bool = False) -> None:
        self.clock, self.log, self.name = clock, log, name
        self.fail_apply, self.fail_rollback = fail_apply, fail_rollback

    async def apply(self) -> dict[str, Any]:
        self.log.append((self.clock.now(), f"apply {self.name}"))
        if self.fail_apply:
            raise RuntimeError("server said no")
        return {"applied": self.name}

    async def rollback(self) -> None:
        self.log.append((self.clock.now(), f"rollback {self.name}"))
        if self.fail_rollback:
            raise RuntimeError("cannot undo")


def fault(target: str, at: float, duration: float | None) -> Fault:
    return Fault(target=target, at=at, duration=duration, down=True)


def make(clock: ManualClock, specs: list[tuple[Fault, dict[str, bool]]], counters: dict[str, float] | None = None,
         *, until: float = float("inf")) -> tuple[Timeline, list[tuple[float, str]], list[tuple[str, dict]]]:
    """``until``: time stops there (a sleep past it waits until the run is cancelled)."""
    log: list[tuple[float, str]] = []
    events: list[tuple[str, dict[str, Any]]] = []

    async def sleep(seconds: float) -> None:
        if clock.now() + seconds > until:
            await asyncio.Event().wait()
        clock.advance(seconds)
        await asyncio.sleep(0)

    async def probe() -> dict[str, float]:
        return dict(counters or {})

    actions = [(f, Recorder(clock, log, f"{f.target}@{f.at:g}", **flags)) for f, flags in specs]
    timeline = Timeline(actions, clock=clock, emit=lambda name, data: events.append((name, data)), probe=probe,
                        sleep=sleep)
    return timeline, log, events


async def test_faults_are_applied_and_rolled_back_on_schedule() -> None:
    clock = ManualClock(100.0)
    timeline, log, events = make(clock, [(fault("storage", 10, 30), {}), (fault("stt", 20, 5), {})])
    await timeline.run(start=100.0)
    assert log == [(110.0, "apply storage@10"), (120.0, "apply stt@20"), (125.0, "rollback stt@20"),
                   (140.0, "rollback storage@10")]
    assert [name for name, _ in events] == ["fault_applied", "fault_applied", "fault_removed", "fault_removed"]
    first = timeline.windows[0].to_json()
    assert (first["applied_at_s"], first["removed_at_s"], first["removed_because"]) == (10.0, 40.0, "scheduled end")


async def test_a_fault_without_duration_is_rolled_back_when_the_run_is_cancelled() -> None:
    clock = ManualClock(0.0)
    timeline, log, events = make(clock, [(fault("storage", 1, None), {})], until=5)
    task = asyncio.create_task(timeline.run(start=0.0))
    for _ in range(10):
        await asyncio.sleep(0)
    assert log == [(1.0, "apply storage@1")]
    clock.advance(5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log[-1] == (6.0, "rollback storage@1")
    assert timeline.windows[0].removed_because == "the run ended"
    assert events[-1][0] == "fault_removed"


async def test_cancelled_before_its_end_every_applied_fault_is_rolled_back_once() -> None:
    clock = ManualClock(0.0)
    timeline, log, _ = make(clock, [(fault("storage", 1, 100), {}), (fault("stt", 2, 100), {}),
                                    (fault("tts", 50, 10), {})], until=10)
    task = asyncio.create_task(timeline.run(start=0.0))
    for _ in range(10):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rollbacks = [what for _, what in log if what.startswith("rollback")]
    # the last applied is undone first; the fault never reached (tts at 50 s) is not touched
    assert rollbacks == ["rollback stt@2", "rollback storage@1"]
    assert "apply tts@50" not in [what for _, what in log]


async def test_a_failed_apply_is_recorded_rolled_back_and_does_not_stop_the_rest() -> None:
    clock = ManualClock(0.0)
    timeline, log, events = make(clock, [(fault("stt", 1, 5), {"fail_apply": True}), (fault("tts", 2, 5), {})])
    await timeline.run(start=0.0)
    assert [what for _, what in log] == ["apply stt@1", "rollback stt@1", "apply tts@2", "rollback tts@2"]
    failed = [data for name, data in events if name == "fault_apply_failed"]
    assert failed and "server said no" in failed[0]["error"]
    assert timeline.windows[0].error is not None and timeline.windows[1].error is None


async def test_a_failed_rollback_is_named_and_the_other_rollbacks_still_run() -> None:
    clock = ManualClock(0.0)
    timeline, log, events = make(clock, [(fault("storage", 1, None), {}),
                                         (fault("stt", 1, None), {"fail_rollback": True})], until=5)
    task = asyncio.create_task(timeline.run(start=0.0))
    for _ in range(10):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [what for _, what in log if what.startswith("rollback")] == ["rollback stt@1", "rollback storage@1"]
    assert any(name == "fault_rollback_failed" and "cannot undo" in data["error"] for name, data in events)
    assert timeline.windows[1].rollback_error is not None


async def test_counters_read_at_apply_and_rollback_give_the_faults_effect() -> None:
    clock = ManualClock(0.0)
    counters = {"runtime:uploads_failed_total": 2.0}
    timeline, _, events = make(clock, [(fault("storage", 1, 3), {})], counters)

    original_sleep = timeline._sleep

    async def sleep_and_count(seconds: float) -> None:
        await original_sleep(seconds)
        counters["runtime:uploads_failed_total"] += 5  # errors counted while the fault is on

    timeline._sleep = sleep_and_count
    await timeline.run(start=0.0)
    assert timeline.windows[0].counters_delta == {"runtime:uploads_failed_total": 5.0}
    removed = next(data for name, data in events if name == "fault_removed")
    assert removed["counters_delta"] == {"runtime:uploads_failed_total": 5.0}


async def test_a_fault_applied_on_demand_is_logged_and_outlives_the_schedule_until_removed() -> None:
    clock = ManualClock(0.0)
    timeline, log, events = make(clock, [(fault("storage", 1, 2), {})])
    task = asyncio.create_task(timeline.run(start=0.0))
    for _ in range(5):
        await asyncio.sleep(0)
    extra = fault("llm", 0, None)
    window = await timeline.apply_now(extra, Recorder(clock, log, "llm on demand"))
    assert window.on_demand and window.active and window.index == 1
    await task  # the schedule ends (storage rolled back); the fault applied on demand stays
    assert timeline.windows[1].active
    done = [what for _, what in log]
    assert "rollback storage@1" in done and "apply llm on demand" in done and "rollback llm on demand" not in done
    applied = [data for name, data in events if name == "fault_applied" and data["on_demand"]]
    assert applied and applied[0]["target"] == "llm"
    removed = await timeline.remove(1)
    assert removed.removed_because == "removed on demand" and not removed.active
    assert log[-1][1] == "rollback llm on demand"
    await timeline.remove(1)  # removing it again changes nothing
    assert [what for _, what in log].count("rollback llm on demand") == 1
    with pytest.raises(KeyError):
        await timeline.remove(7)


async def test_a_fault_on_demand_with_a_duration_ends_by_itself_and_rollback_all_ends_the_rest() -> None:
    clock = ManualClock(0.0)
    timeline, log, _ = make(clock, [])
    short = await timeline.apply_now(fault("llm", 0, 3), Recorder(clock, log, "short"))
    await timeline.apply_now(fault("stt", 0, None), Recorder(clock, log, "open"))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not short.active and short.removed_because == "scheduled end"
    assert timeline.windows[1].active
    await timeline.rollback_all("the run ended")
    assert not timeline.windows[1].active and timeline.windows[1].removed_because == "the run ended"
