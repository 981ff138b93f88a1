"""Per-call memory and the memory monitor: safeguard 5 (incident 5: audio buffers pile up until the worker dies).

Two halves, each switched by ``safeguards.memory``:

- **Per-call buffers** (:class:`CallMemoryLedger`). At call end the call hands its recording (its two audio
  tracks) to the ledger. ``broken`` keeps it, with the decoded PCM of both tracks (what a leaking platform's
  per-call audio pipeline holds), in an app-level list that is never trimmed: RSS grows with every call, as in
  the incident. ``fixed`` keeps nothing: the buffers go with the call. Either way the ledger *measures* what
  outlives its call through weak references (not by bookkeeping): a buffer counts as retained for as long as
  anything in the process still holds it, so a leak added anywhere else shows up too.
- **The monitor** (:class:`MemoryWatch`, sans-I/O, and :class:`MemoryMonitor`, its periodic adapter). Every
  ``check_interval_s`` it reads RSS (``/proc/self/statm``) and CPU time, and exports them against the budget.
  ``fixed`` alerts at ``alert_fraction`` of the budget (a metric and a log line) and, at ``drain_fraction``,
  starts a graceful drain: ``/readyz`` answers 503, new calls are refused the way a full runtime refuses them
  (``<Reject reason="busy"/>``, websocket close 1013 "draining"), the calls in progress finish, and the process
  exits with :data:`EXIT_DRAINED` for its supervisor to restart it. ``broken`` watches nothing: it never alerts
  and never drains.

``memory.oom_kill`` emulates the container's memory limit in either mode: at 100 % of the budget the process is
killed with SIGKILL, as the kernel's OOM killer kills a container over its limit (calls in progress drop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from harness.audio.formats import from_bytes
from harness.clock import Clock
from reference_runtime.config import MemoryConfig, Mode
from reference_runtime.recording import Recording

log = logging.getLogger(__name__)

#: the exit code of a runtime that drained on purpose and asks to be restarted: ``EX_TEMPFAIL`` of sysexits.h
#: ("temporary failure; the user is invited to retry"). harness/stack.py treats it as "drained, restart me".
EXIT_DRAINED = 75


# --- per-call buffers --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _KeptCall:
    """What the broken way keeps of a finished call: its recording and the decoded PCM of both tracks."""

    recording: Recording
    caller_pcm: np.ndarray
    agent_pcm: np.ndarray


class CallMemoryLedger:
    """What finished calls leave in memory. ``keep=True`` is the broken way (the leak); the measurement is the same
    in both modes: weak references to every per-call buffer handed over at call end."""

    def __init__(self, *, keep: bool) -> None:
        self.keep = keep
        self.calls_ended = 0
        self._kept: list[_KeptCall] = []  # broken: grows by one per call, never trimmed (the incident)
        # id(buffer) -> (weak reference, bytes, is a recording). Keyed by id because recordings and arrays are not
        # hashable; an entry leaves when its buffer dies (the weakref callback, in whichever thread dropped it).
        self._alive: dict[int, tuple[weakref.ref[Any], int, bool]] = {}

    def _track(self, buffer: Any, nbytes: int, *, recording: bool) -> None:
        key = id(buffer)
        self._alive[key] = (weakref.ref(buffer, lambda _, key=key: self._alive.pop(key, None)), nbytes, recording)

    def call_ended(self, recording: Recording) -> None:
        """Called by the call when it hands its recording over (the recording sink decides how long it lives)."""
        self.calls_ended += 1
        self._track(recording, recording.nbytes, recording=True)
        if not self.keep:
            return
        kept = _KeptCall(
            recording,
            from_bytes(recording.caller_audio, recording.audio_format),
            from_bytes(recording.agent_audio, recording.audio_format),
        )
        self._track(kept.caller_pcm, kept.caller_pcm.nbytes, recording=False)
        self._track(kept.agent_pcm, kept.agent_pcm.nbytes, recording=False)
        self._kept.append(kept)

    def _snapshot(self) -> list[tuple[weakref.ref[Any], int, bool]]:
        while True:  # another thread may drop a buffer (and its entry) while we copy
            try:
                return list(self._alive.values())
            except RuntimeError:
                continue

    @property
    def retained_calls(self) -> int:
        """Finished calls whose audio is still in memory (their recording object is alive somewhere)."""
        return sum(1 for ref, _, is_recording in self._snapshot() if is_recording and ref() is not None)

    @property
    def retained_bytes(self) -> int:
        """Bytes of finished calls' audio buffers still alive (tracks, and decoded PCM when kept)."""
        return sum(nbytes for ref, nbytes, _ in self._snapshot() if ref() is not None)


# --- the monitor: the decision (sans-I/O) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryAlert:
    """RSS crossed ``alert_fraction`` of the budget (raised once per crossing)."""

    rss_bytes: float
    fraction: float


@dataclass(frozen=True, slots=True)
class MemoryAlertCleared:
    rss_bytes: float
    fraction: float


@dataclass(frozen=True, slots=True)
class DrainNeeded:
    """RSS crossed ``drain_fraction``: stop taking calls, finish the ones in progress, exit (raised once)."""

    rss_bytes: float
    fraction: float


@dataclass(frozen=True, slots=True)
class OverBudget:
    """RSS reached the whole budget: where a container's memory limit has the kernel kill the process."""

    rss_bytes: float
    fraction: float


MemoryEvent = MemoryAlert | MemoryAlertCleared | DrainNeeded | OverBudget

#: an alert clears only once RSS is this much (as a fraction of the budget) below the alert line, so a reading
#: that hovers at the line does not count as many alerts
ALERT_HYSTERESIS = 0.05


class MemoryWatch:
    """Feeds on RSS readings and says what they mean against the budget. ``enforce=False`` (broken) raises no
    alert and no drain; ``oom_kill`` adds :class:`OverBudget` at 100 % in either mode."""

    def __init__(
        self,
        budget_bytes: float,
        *,
        alert_fraction: float = 0.8,
        drain_fraction: float = 0.85,
        enforce: bool = True,
        oom_kill: bool = False,
    ) -> None:
        if budget_bytes <= 0:
            raise ValueError("budget_bytes must be > 0")
        if not 0 < alert_fraction <= drain_fraction <= 1:
            raise ValueError("need 0 < alert_fraction <= drain_fraction <= 1")
        self.budget_bytes = budget_bytes
        self.alert_fraction = alert_fraction
        self.drain_fraction = drain_fraction
        self.enforce = enforce
        self.oom_kill = oom_kill
        self.alerting = False
        self.draining = False
        self.alerts = 0
        self.fraction = 0.0

    def observe(self, rss_bytes: float) -> list[MemoryEvent]:
        self.fraction = fraction = rss_bytes / self.budget_bytes
        events: list[MemoryEvent] = []
        if self.enforce:
            if not self.alerting and fraction >= self.alert_fraction:
                self.alerting = True
                self.alerts += 1
                events.append(MemoryAlert(rss_bytes, fraction))
            elif self.alerting and fraction < self.alert_fraction - ALERT_HYSTERESIS:
                self.alerting = False
                events.append(MemoryAlertCleared(rss_bytes, fraction))
            if not self.draining and fraction >= self.drain_fraction:
                self.draining = True
                events.append(DrainNeeded(rss_bytes, fraction))
        if self.oom_kill and fraction >= 1.0:
            events.append(OverBudget(rss_bytes, fraction))
        return events


# --- the monitor: the periodic adapter ---------------------------------------------------------------------------


class ProcessProbe(Protocol):
    def rss_bytes(self) -> float: ...

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        ...


class ProcProbe:
    """This process, from ``/proc/self/statm`` (RSS now, not the peak ``getrusage`` reports) and ``os.times``."""

    def rss_bytes(self) -> float:
        from reference_runtime.metrics import process_rss_bytes  # one RSS reader for the gauge and the monitor

        return process_rss_bytes()

    def cpu_seconds(self) -> float:
        times = os.times()
        return times.user + times.system


class MemoryObserver(Protocol):
    """The runtime's metrics, as the monitor reports to them."""

    def memory_sampled(self, rss_bytes: float, budget_bytes: float, cpu_percent: float | None) -> None: ...

    def memory_alert(self, active: bool) -> None: ...


def _sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class MemoryMonitor:
    """Samples the process every ``check_interval_s`` (one :meth:`check` per sample; tests call it directly with a
    manual clock and a fake probe) and acts on :class:`MemoryWatch`'s events: ``drain(detail)`` is the runtime's
    graceful drain, ``kill()`` the OOM emulation."""

    def __init__(
        self,
        config: MemoryConfig,
        mode: Mode,
        *,
        clock: Clock,
        probe: ProcessProbe | None = None,
        observer: MemoryObserver | None = None,
        drain: Callable[[dict[str, Any]], None],
        kill: Callable[[], None] = _sigkill_self,
    ) -> None:
        self.config = config
        self.mode = mode
        self.watch = MemoryWatch(
            config.budget_mb * 2**20,
            alert_fraction=config.alert_fraction,
            drain_fraction=config.drain_fraction,
            enforce=mode == "fixed",
            oom_kill=config.oom_kill,
        )
        self._clock = clock
        self.probe = probe or ProcProbe()
        self._observer = observer
        self._drain = drain
        self._kill = kill
        self._last_cpu: tuple[float, float] | None = None  # (clock, cpu seconds) of the previous sample
        self.cpu_percent: float | None = None
        self.rss_bytes = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def budget_bytes(self) -> float:
        return self.watch.budget_bytes

    def check(self) -> list[MemoryEvent]:
        """One sample: read, export, decide, act."""
        now = self._clock.now()
        self.rss_bytes = rss = self.probe.rss_bytes()
        cpu = self.probe.cpu_seconds()
        if self._last_cpu is not None and now > self._last_cpu[0]:
            # percent of one core over the last interval (a busy asyncio worker tops out near 100)
            self.cpu_percent = 100.0 * max(0.0, cpu - self._last_cpu[1]) / (now - self._last_cpu[0])
        self._last_cpu = (now, cpu)
        events = self.watch.observe(rss)
        if self._observer is not None:
            self._observer.memory_sampled(rss, self.budget_bytes, self.cpu_percent)
        for event in events:
            self._act(event)
        return events

    def _act(self, event: MemoryEvent) -> None:
        mib = event.rss_bytes / 2**20
        budget = self.budget_bytes / 2**20
        if isinstance(event, MemoryAlert):
            log.warning("memory alert: RSS %.0f MiB is %.0f %% of the %.0f MiB budget (alert at %.0f %%)",
                        mib, 100 * event.fraction, budget, 100 * self.config.alert_fraction)
            if self._observer is not None:
                self._observer.memory_alert(True)
        elif isinstance(event, MemoryAlertCleared):
            log.info("memory alert cleared: RSS %.0f MiB (%.0f %% of the budget)", mib, 100 * event.fraction)
            if self._observer is not None:
                self._observer.memory_alert(False)
        elif isinstance(event, DrainNeeded):
            log.error("memory: RSS %.0f MiB is %.0f %% of the %.0f MiB budget (drain at %.0f %%): draining, no new "
                      "calls; the calls in progress finish, then the process exits %d to be restarted",
                      mib, 100 * event.fraction, budget, 100 * self.config.drain_fraction, EXIT_DRAINED)
            self._drain({"rss_bytes": int(event.rss_bytes), "budget_bytes": int(self.budget_bytes),
                         "fraction": round(event.fraction, 4)})
        elif isinstance(event, OverBudget):
            log.critical("memory: RSS %.0f MiB reached the %.0f MiB budget: killed (memory.oom_kill emulates the "
                         "container's memory limit)", mib, budget)
            self._kill()

    async def run(self) -> None:
        while True:
            try:
                self.check()
            except Exception:  # a failed reading must not end the monitoring
                log.exception("memory monitor: check failed")
            await asyncio.sleep(self.config.check_interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="memory-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
