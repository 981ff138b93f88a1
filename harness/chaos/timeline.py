"""The fault timeline: apply each fault at its time, roll it back at its end, and roll back everything still applied
however the run ends (the load finished, ``limits.duration``, Ctrl-C, an exception, a crashed runtime).

Contract:
- times are seconds after the load started, on the injected clock; a fault is applied no earlier than its ``at``;
- every applied fault is rolled back exactly once: at ``at + duration``, or by :meth:`Timeline.run`'s ``finally``
  when the run ends first (cancellation included). A fault whose ``apply`` failed is rolled back too (a partial
  apply leaves nothing behind), and the failure is recorded, not raised: one broken fault must not stop the load;
- each change is written to the event log (``fault_applied``, ``fault_apply_failed``, ``fault_removed``,
  ``fault_rollback_failed``) with its run-relative time, and the counters a probe reads (the runtime's and the
  fakes' error counts) are taken at apply and at rollback, so the summary can say what each fault did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from harness.chaos.faults import Fault, FaultAction
from harness.clock import Clock

Emit = Callable[[str, dict[str, Any]], None]
Probe = Callable[[], Awaitable[dict[str, float]]]


@dataclass
class FaultWindow:
    index: int
    fault: Fault
    on_demand: bool = False  # applied during the run by a person (the Locust UI's Chaos tab), not the schedule
    started: bool = False  # apply was called (it may have been cancelled half-way: roll back anyway)
    applied_at: float | None = None
    removed_at: float | None = None
    removed_because: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    rollback_error: str | None = None
    counters_delta: dict[str, float] = field(default_factory=dict)
    _counters_at_apply: dict[str, float] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.applied_at is not None and self.removed_at is None

    def to_json(self) -> dict[str, Any]:
        fault = self.fault
        return {
            "index": self.index, "label": fault.label, "target": fault.target, "action": fault.action,
            "on_demand": self.on_demand, "active": self.active,
            "spec": fault.describe(), "planned_at_s": fault.at,
            "planned_until_s": None if fault.duration is None else round(fault.at + fault.duration, 3),
            "applied_at_s": self.applied_at, "removed_at_s": self.removed_at,
            "removed_because": self.removed_because or None, "details": self.details, "error": self.error,
            "rollback_error": self.rollback_error, "counters_delta": self.counters_delta,
        }


async def _no_probe() -> dict[str, float]:
    return {}


class Timeline:
    def __init__(self, faults: list[tuple[Fault, FaultAction]], *, clock: Clock, emit: Emit,
                 probe: Probe = _no_probe, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._actions = [action for _, action in faults]
        self.windows = [FaultWindow(index, fault) for index, (fault, _) in enumerate(faults)]
        self._clock = clock
        self._emit = emit
        self._probe = probe
        self._sleep = sleep
        self._start: float | None = None
        self._timers: set[asyncio.Task[None]] = set()

    def elapsed(self) -> float:
        return 0.0 if self._start is None else round(self._clock.now() - self._start, 3)

    async def run(self, start: float) -> None:
        """Run the schedule from ``start`` (a clock reading) until every fault has ended, or until cancelled;
        either way, whatever is still applied is rolled back before this returns."""
        self._start = start
        steps: list[tuple[float, int, int]] = []  # (time, 0 = rollback first at equal times / 1 = apply, window)
        for window in self.windows:
            steps.append((window.fault.at, 1, window.index))
            if window.fault.duration is not None:
                steps.append((window.fault.at + window.fault.duration, 0, window.index))
        steps.sort()
        try:
            for when, kind, index in steps:
                delay = start + when - self._clock.now()
                if delay > 0:
                    await self._sleep(delay)
                window = self.windows[index]
                if kind == 1:
                    await self._apply(window)
                elif window.started and window.removed_at is None:  # not when a failed apply was undone already
                    await self._rollback(window, "scheduled end")
            # faults without a duration stay until the run ends (the caller cancels us)
            if any(w.active for w in self.windows):
                await asyncio.Event().wait()
        finally:
            # the schedule's own faults; those applied on demand stay until removed or rollback_all
            await asyncio.shield(self.rollback_all("the run ended", scheduled_only=True))

    async def rollback_all(self, because: str, *, scheduled_only: bool = False) -> None:
        if not scheduled_only:
            for timer in self._timers:
                timer.cancel()
        for window in reversed(self.windows):  # undo in reverse order, as a stack of changes
            if scheduled_only and window.on_demand:
                continue
            if window.started and window.removed_at is None:
                await self._rollback(window, because)

    # --- faults on demand (the Locust UI's Chaos tab) -----------------------------------------------------------------

    async def apply_now(self, fault: Fault, action: FaultAction) -> FaultWindow:
        """Apply ``fault`` now, recorded like a scheduled one (``at`` is now); with a duration it is rolled back by
        itself, otherwise by :meth:`remove` or when the run ends (:meth:`rollback_all`)."""
        fault = fault.model_copy(update={"at": self.elapsed()})
        window = FaultWindow(len(self.windows), fault, on_demand=True)
        self.windows.append(window)
        self._actions.append(action)
        await self._apply(window)
        if window.active and fault.duration is not None:
            timer = asyncio.create_task(self._end_after(window, fault.duration))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)
        return window

    async def remove(self, index: int, because: str = "removed on demand") -> FaultWindow:
        """Roll back one fault now (scheduled or not); removing one already removed changes nothing."""
        if not 0 <= index < len(self.windows):
            raise KeyError(index)
        window = self.windows[index]
        if window.started and window.removed_at is None:
            await self._rollback(window, because)
        return window

    async def _end_after(self, window: FaultWindow, seconds: float) -> None:
        await self._sleep(seconds)
        if window.removed_at is None:
            await self._rollback(window, "scheduled end")

    async def _apply(self, window: FaultWindow) -> None:
        fault = window.fault
        window._counters_at_apply = await self._safe_probe()
        window.started = True
        try:
            window.details = await self._actions[window.index].apply()
        except Exception as exc:  # recorded and rolled back; the load goes on
            window.error = f"{exc.__class__.__name__}: {exc}"
            window.applied_at = self.elapsed()
            self._emit("fault_apply_failed", {"fault": window.index, "label": fault.label, "target": fault.target,
                                              "at_s": window.applied_at, "error": window.error})
            await self._rollback(window, "apply failed")
            return
        window.applied_at = self.elapsed()
        self._emit("fault_applied", {"fault": window.index, "label": fault.label, "target": fault.target,
                                     "action": fault.action, "on_demand": window.on_demand, "spec": fault.describe(),
                                     "at_s": window.applied_at,
                                     "planned_at_s": fault.at, "details": window.details})

    async def _rollback(self, window: FaultWindow, because: str) -> None:
        fault = window.fault
        try:
            await self._actions[window.index].rollback()
        except Exception as exc:  # named in the log and the summary; the other rollbacks still run
            window.rollback_error = f"{exc.__class__.__name__}: {exc}"
            self._emit("fault_rollback_failed", {"fault": window.index, "label": fault.label,
                                                 "target": fault.target, "at_s": self.elapsed(),
                                                 "error": window.rollback_error})
        window.removed_at = self.elapsed()
        window.removed_because = because
        after = await self._safe_probe()
        before = window._counters_at_apply
        window.counters_delta = {k: round(v - before.get(k, 0.0), 6) for k, v in after.items()
                                 if v - before.get(k, 0.0) != 0}
        if window.error is None:
            self._emit("fault_removed", {"fault": window.index, "label": fault.label, "target": fault.target,
                                         "at_s": window.removed_at, "because": because,
                                         "counters_delta": window.counters_delta})

    async def _safe_probe(self) -> dict[str, float]:
        try:
            return await self._probe()
        except Exception:  # a probe that fails only loses the counters, never a rollback
            return {}
