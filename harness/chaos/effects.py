"""What each fault did to the calls: the calls and turns inside its window, beside those outside any window.

Times: a fault window is in seconds after the load started. Call records carry their start as wall-clock time and
their turns on the caller's monotonic clock, so both are shifted by the load's start on the same clock.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from harness.summary import distribution


def _call_span(call: dict[str, Any], load_start_wall: float) -> tuple[float, float]:
    start = float(call.get("started_at") or 0.0) - load_start_wall
    return start, start + float(call.get("duration_s") or 0.0)


def _turn_time(turn: dict[str, Any], load_start_mono: float) -> float:
    return float(turn.get("listen_from") or 0.0) - load_start_mono


def _turns_summary(turns: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [float(t["response_latency_ms"]) for t in turns
                 if t.get("kind") == "reply" and t.get("response_latency_ms") is not None]
    return {
        "turns": len(turns),
        "statuses": dict(Counter(str(t.get("status")) for t in turns)),
        "response_latency_ms": distribution(latencies),
        "max_gap_ms": max((float(t.get("max_gap_ms") or 0.0) for t in turns), default=None),
    }


def fault_effects(windows: list[dict[str, Any]], calls: list[dict[str, Any]], *, load_start_mono: float,
                  load_start_wall: float, run_end_s: float) -> list[dict[str, Any]]:
    """For each window: the calls in progress during it (by outcome), the turns that began in it, and the calls
    that started after it ended (did service come back?). A last entry, ``outside any fault``, is the baseline."""
    spans = [(call, *_call_span(call, load_start_wall)) for call in calls]
    out: list[dict[str, Any]] = []
    intervals: list[tuple[float, float]] = []
    for window in windows:
        applied = window.get("applied_at_s")
        if applied is None or window.get("error"):
            out.append({**window, "effect": None})
            continue
        removed = window.get("removed_at_s")
        end = run_end_s if removed is None else float(removed)
        intervals.append((float(applied), end))
        during = [call for call, start, stop in spans if start <= end and stop >= applied]
        turns = [turn for call in calls for turn in call.get("turns", [])
                 if applied <= _turn_time(turn, load_start_mono) <= end]
        after = [call for call, start, _ in spans if start >= end]
        out.append({**window, "effect": {
            "calls_during": len(during),
            "outcomes_during": dict(Counter(str(c.get("outcome")) for c in during)),
            **_turns_summary(turns),
            "calls_started_after": len(after),
            "outcomes_after": dict(Counter(str(c.get("outcome")) for c in after)),
        }})
    if windows:
        def outside(t: float) -> bool:
            return not any(a <= t <= b for a, b in intervals)

        quiet_turns = [turn for call in calls for turn in call.get("turns", [])
                       if outside(_turn_time(turn, load_start_mono))]
        quiet_calls = [call for call, start, stop in spans
                       if all(stop < a or start > b for a, b in intervals)]
        out.append({"label": "outside any fault", "effect": {
            "calls_during": len(quiet_calls),
            "outcomes_during": dict(Counter(str(c.get("outcome")) for c in quiet_calls)),
            **_turns_summary(quiet_turns),
        }})
    return out
