"""Live voice figures for the load engine's web UI, fed on the Locust master with every worker's records.

Sans-I/O: no Locust, no Flask, no sockets. The master calls :meth:`VoiceStats.call_started`, :meth:`~VoiceStats.turn`,
:meth:`~VoiceStats.call_ended` and :meth:`~VoiceStats.lateness` as the workers' messages arrive, and the web routes
read :meth:`~VoiceStats.snapshot`. Time comes from the injected ``clock``; tests advance it instead of sleeping.

Two horizons for every distribution:

- the *window*: the values recorded (by the clock, when ``turn()`` was called) in the last ``window_s`` seconds, kept
  as raw values and summarised exactly (numpy's linear-interpolation percentiles, the same as the end-of-run report,
  :func:`harness.summary.percentile`). The window holds at most ``window_cap`` values (oldest dropped first), so a
  burst cannot grow it without bound; ``snapshot()`` says when it was capped;
- the *whole run*: a fixed-bin histogram, 1 ms bins from 0 to 60 s plus an overflow count and the exact maximum, so
  memory is constant over a 2 h soak. A whole-run percentile is the upper edge of the bin that holds it, capped at
  the maximum: at most 1 ms above the exact value, never below it (a latency is never understated). Values of 60 s or
  more fall in the overflow, whose percentile is the maximum.

Pacing lateness arrives as each worker's *cumulative* :class:`~harness.lateness.LatenessHistogram` (its JSON, see
:func:`harness.lateness.lateness_to_json`): a new one replaces that worker's previous one, and the figures are
the merge over workers.
A worker that goes away stops counting in the active calls, but its lateness stays in the merge: those frames were
really sent, and a late harness invalidates the run whichever worker was late.

Validity: the run is invalid when the merged lateness p99 is above ``lateness_limit_ms`` (the harness, not the agent,
was the bottleneck). Below ``min_lateness_frames`` frames (default 1000, i.e. 20 s of one call) it stays valid with
the reason "not enough frames yet": the p99 of a few hundred frames is a handful of samples from the first second of
a worker (imports, connection set-up), not the harness's steady pace. The live view says so, with the p99 so far;
the run's verdict at the end (the summary, the exit code) judges every frame however few.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.lateness import LatenessHistogram, lateness_from_json

#: whole-run histograms: 1 ms bins up to 60 s, then one overflow count
RUN_BIN_MS = 1.0
RUN_BINS = 60_000
#: distinct call-end reasons kept (a reason may carry variable text; the rest are counted under OTHER_REASONS)
MAX_REASONS = 50
OTHER_REASONS = "(other reasons)"


# --- distributions over two horizons ----------------------------------------------------------------------------------


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


class RunHistogram:
    """Every value of the run in 1 ms bins up to 60 s (+ overflow and the exact max): constant memory."""

    def __init__(self) -> None:
        self.counts = np.zeros(RUN_BINS, dtype=np.int64)
        self.overflow = 0
        self.total = 0
        self.maximum = 0.0

    def record(self, ms: float) -> None:
        ms = max(ms, 0.0)
        index = int(ms / RUN_BIN_MS)
        if index < RUN_BINS:
            self.counts[index] += 1
        else:
            self.overflow += 1
        self.total += 1
        self.maximum = max(self.maximum, ms)

    def count_above(self, ms: float) -> int:
        """Values strictly above ``ms``, exact when ``ms`` is a whole number of bins (the dead-air limit is)."""
        first = math.floor(ms / RUN_BIN_MS) + 1  # bin `first - 1` holds [ms, ms + 1): not above; a bin edge only
        return int(self.counts[min(first, RUN_BINS):].sum()) + self.overflow

    def percentiles(self, qs: Iterable[float]) -> list[float | None]:
        """Upper edge of the bin holding each q-th percentile (nearest rank), capped at the maximum."""
        qs = list(qs)
        if self.total == 0:
            return [None for _ in qs]
        cumulative = np.cumsum(self.counts)
        out: list[float | None] = []
        for q in qs:
            rank = max(1, math.ceil(q / 100.0 * self.total))
            index = int(np.searchsorted(cumulative, rank))  # first bin whose running count reaches the rank
            out.append(self.maximum if index >= RUN_BINS else min((index + 1) * RUN_BIN_MS, self.maximum))
        return out


@dataclass
class Window:
    """The values of the last ``span_s`` seconds, stamped by the clock when recorded; at most ``cap`` of them."""

    span_s: float
    cap: int
    values: deque[tuple[float, float]] = field(init=False)
    dropped: int = 0  # values pushed out by the cap (not by age) since the start

    def __post_init__(self) -> None:
        self.values = deque(maxlen=self.cap)

    def record(self, now: float, value: float) -> None:
        if len(self.values) == self.cap:
            self.dropped += 1
        self.values.append((now, value))

    def current(self, now: float) -> np.ndarray:
        horizon = now - self.span_s
        while self.values and self.values[0][0] <= horizon:
            self.values.popleft()
        return np.fromiter((v for _, v in self.values), dtype=float, count=len(self.values))


def _latency_summary(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"count": int(values.size), "p50": _round(p50), "p95": _round(p95), "p99": _round(p99),
            "max": _round(values.max())}


def _run_latency_summary(histogram: RunHistogram) -> dict[str, Any]:
    p50, p95, p99 = histogram.percentiles((50, 95, 99))
    return {"count": histogram.total, "p50": _round(p50), "p95": _round(p95), "p99": _round(p99),
            "max": _round(histogram.maximum if histogram.total else None)}


# --- the live figures -------------------------------------------------------------------------------------------------


class VoiceStats:
    """The master's live view of every call of the run (see the module docstring for the horizons and precision)."""

    def __init__(self, *, lateness_limit_ms: float, clock: Callable[[], float], window_s: float = 60.0,
                 dead_air_ms: float = 1500.0, min_lateness_frames: int = 1000, history_every_s: float = 5.0,
                 history_len: int = 360, window_cap: int = 100_000) -> None:
        self.lateness_limit_ms = lateness_limit_ms
        self.window_s = window_s
        self.dead_air_ms = dead_air_ms
        self.min_lateness_frames = min_lateness_frames
        self.history_every_s = history_every_s
        self._clock = clock
        self._start = clock()
        self._latency = Window(window_s, window_cap)
        self._greeting = Window(window_s, window_cap)
        self._gaps = Window(window_s, window_cap)
        self._latency_run = RunHistogram()
        self._greeting_run = RunHistogram()
        self._gaps_run = RunHistogram()
        self._dead_air_turns = 0
        self._active: Counter[str] = Counter()
        self._started = 0
        self._ended = 0
        self._outcomes: Counter[str] = Counter()
        self._reasons: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()
        self._lateness_by_worker: dict[str, LatenessHistogram] = {}
        self._lateness_merged: LatenessHistogram | None = LatenessHistogram()  # None: recompute on next read
        self._history: deque[dict[str, Any]] = deque(maxlen=history_len)
        self._next_history = self._start
        self._load_start: float | None = None

    # -- inputs --------------------------------------------------------------------------------------------------------

    def load_started(self) -> None:
        """The run's load started (its first test): fault windows are timed from here, the history from our start."""
        if self._load_start is None:
            self._load_start = self._clock()

    def call_started(self, worker: str) -> None:
        self._active[worker] += 1
        self._started += 1

    def turn(self, turn: dict[str, Any]) -> None:
        """One finished agent turn (a TurnRecord's JSON, plus ``call_id``)."""
        now = self._clock()
        latency = turn.get("response_latency_ms")
        if latency is not None:
            if turn.get("kind") == "reply":
                self._latency.record(now, float(latency))
                self._latency_run.record(float(latency))
            elif turn.get("kind") == "greeting":
                self._greeting.record(now, float(latency))
                self._greeting_run.record(float(latency))
        gaps = [float(g) for g in turn.get("gaps_ms") or ()]
        for gap in gaps:
            self._gaps.record(now, gap)
            self._gaps_run.record(gap)
        if gaps and max(gaps) > self.dead_air_ms:
            self._dead_air_turns += 1  # the end-of-run summary's "turns with dead air"
        self._statuses[str(turn.get("status", "open"))] += 1
        self._maybe_sample(now)

    def call_ended(self, record: dict[str, Any], worker: str) -> None:
        """A finished call (a CallRecord's JSON). Its turns are not read: they arrived one by one through turn()."""
        if self._active[worker] > 0:  # a call of a worker already declared gone must not go below zero
            self._active[worker] -= 1
        if self._active[worker] == 0:
            del self._active[worker]
        self._ended += 1
        outcome = str(record.get("outcome") or "unknown")
        self._outcomes[outcome] += 1
        reason = str(record.get("reason") or "")
        if reason and outcome != "completed":
            if reason not in self._reasons and len(self._reasons) >= MAX_REASONS:
                reason = OTHER_REASONS
            self._reasons[reason] += 1

    def lateness(self, worker: str, histogram: dict[str, Any]) -> None:
        """A worker's cumulative pacing lateness (:func:`lateness_to_json`), replacing its previous one."""
        self._lateness_by_worker[worker] = lateness_from_json(histogram)
        self._lateness_merged = None

    def worker_gone(self, worker: str) -> None:
        self._active.pop(worker, None)

    # -- output --------------------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every figure, JSON-able. Times: ``t`` is seconds since these stats were created (by the clock)."""
        now = self._clock()
        self._maybe_sample(now)
        latency = self._latency.current(now)
        gaps = self._gaps.current(now)
        lateness = self._merged_lateness().summary_ms()
        return {
            "t": round(now - self._start, 3),
            # where the run's time 0 (fault windows' applied_at_s, removed_at_s) falls on the history's time axis
            "load_start_t": None if self._load_start is None else round(self._load_start - self._start, 3),
            "window_s": self.window_s,
            "response_latency_ms": {"window": _latency_summary(latency),
                                    "run": _run_latency_summary(self._latency_run)},
            "greeting_latency_ms": {"window": _latency_summary(self._greeting.current(now)),
                                    "run": _run_latency_summary(self._greeting_run)},
            "gaps_ms": {"dead_air_ms": self.dead_air_ms, "window": self._gap_window(gaps), "run": self._gap_run()},
            "active_calls": {"total": sum(self._active.values()), "by_worker": dict(sorted(self._active.items()))},
            "calls": {"started": self._started, "ended": self._ended, "by_outcome": dict(self._outcomes),
                      "reasons": dict(self._reasons.most_common())},
            "turns": {"total": sum(self._statuses.values()), "by_status": dict(self._statuses)},
            "lateness": {**lateness, "workers": len(self._lateness_by_worker), "limit_ms": self.lateness_limit_ms},
            "validity": self._validity(lateness),
            "history": list(self._history),
            "window_capped": self._latency.dropped + self._greeting.dropped + self._gaps.dropped,
            "precision": "window: exact (linear-interpolation percentiles); whole run: 1 ms bins up to 60 s, "
                         "a percentile is at most 1 ms above the exact value; max exact",
        }

    def _gap_window(self, gaps: np.ndarray) -> dict[str, Any]:
        if gaps.size == 0:
            return {"count": 0, "p95": None, "max": None, "dead_air": 0}
        return {"count": int(gaps.size), "p95": _round(np.percentile(gaps, 95)), "max": _round(gaps.max()),
                "dead_air": int((gaps > self.dead_air_ms).sum())}

    def _gap_run(self) -> dict[str, Any]:
        run = self._gaps_run
        (p95,) = run.percentiles((95,))
        return {"count": run.total, "p95": _round(p95), "max": _round(run.maximum if run.total else None),
                "dead_air": run.count_above(self.dead_air_ms), "dead_air_turns": self._dead_air_turns}

    def _merged_lateness(self) -> LatenessHistogram:
        if self._lateness_merged is None:  # merged lazily: workers report every few seconds, the UI polls as often
            merged = LatenessHistogram()
            for histogram in self._lateness_by_worker.values():
                merged.merge(histogram)
            self._lateness_merged = merged
        return self._lateness_merged

    def _validity(self, lateness: dict[str, Any]) -> dict[str, Any]:
        frames = int(lateness["frames"] or 0)
        p99 = lateness["p99_ms"]
        if frames < self.min_lateness_frames or p99 is None:
            so_far = "" if p99 is None else (
                f"; p99 so far {p99:g} ms{' (above the limit)' if p99 > self.lateness_limit_ms else ''}")
            return {"valid": True, "judged": False,
                    "reason": f"not enough frames yet ({frames} of {self.min_lateness_frames}) to judge the "
                              f"harness's pacing live{so_far}; the run's verdict at the end judges every frame"}
        if p99 > self.lateness_limit_ms:
            return {"valid": False, "judged": True,
                    "reason": f"the harness, not the agent, was the bottleneck: pacing lateness p99 {p99:g} ms > "
                              f"{self.lateness_limit_ms:g} ms"}
        return {"valid": True, "judged": True,
                "reason": f"pacing lateness p99 {p99:g} ms <= {self.lateness_limit_ms:g} ms over {frames} frames"}

    def _maybe_sample(self, now: float) -> None:
        """One history point every ``history_every_s`` (taken by whichever input or read comes first after it is
        due): a chart of the window's p95, not of single turns, so it is smooth and bounded."""
        if now < self._next_history:
            return
        # skip the points missed while idle: the next one is due a full period from now, not in the past
        self._next_history = now + self.history_every_s
        latency = self._latency.current(now)
        gaps = self._gaps.current(now)
        self._history.append({
            "t": round(now - self._start, 3),
            "latency_p95_ms": _round(np.percentile(latency, 95)) if latency.size else None,
            "max_gap_ms": _round(gaps.max()) if gaps.size else None,
            "active_calls": sum(self._active.values()),
            "lateness_p99_ms": self._merged_lateness().summary_ms()["p99_ms"],
        })
