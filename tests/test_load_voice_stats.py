"""VoiceStats: the master's live voice figures, fed with records as the workers send them; the clock is injected."""

from __future__ import annotations

import json
import math
import random

import pytest

from harness.lateness import LatenessHistogram, lateness_from_json, lateness_to_json
from harness.load.voice_stats import RunHistogram, VoiceStats


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reply(latency_ms: float | None, gaps: list[float] | None = None, status: str = "ok") -> dict:
    return {"call_id": 1, "index": 1, "step": 1, "kind": "reply", "response_latency_ms": latency_ms,
            "gaps_ms": gaps or [], "status": status}


def greeting(latency_ms: float) -> dict:
    return {"call_id": 1, "index": 0, "step": 0, "kind": "greeting", "response_latency_ms": latency_ms,
            "gaps_ms": [], "status": "ok"}


def lateness_json(*seconds: float) -> dict:
    histogram = LatenessHistogram()
    for s in seconds:
        histogram.record(s)
    return lateness_to_json(histogram)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stats(clock: Clock) -> VoiceStats:
    return VoiceStats(lateness_limit_ms=5.0, clock=clock, window_s=60.0)


def test_latency_percentiles_window_exact_and_run_within_one_ms(stats: VoiceStats) -> None:
    for i in range(101):
        stats.turn(reply(i + 0.5))
    latency = stats.snapshot()["response_latency_ms"]
    # the window is exact (numpy's linear interpolation, as the end-of-run report)
    assert latency["window"] == {"count": 101, "p50": 50.5, "p95": 95.5, "p99": 99.5, "max": 100.5}
    # the whole run: upper edge of the 1 ms bin holding the nearest-rank value, so exact + 0.5 here; max exact
    assert latency["run"] == {"count": 101, "p50": 51.0, "p95": 96.0, "p99": 100.0, "max": 100.5}


def test_run_histogram_is_never_below_and_at_most_one_ms_above_the_exact_percentile() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(6.5, 0.6) for _ in range(5000)]
    histogram = RunHistogram()
    for v in values:
        histogram.record(v)
    ordered = sorted(values)
    for q, got in zip((50, 90, 95, 99, 99.9), histogram.percentiles((50, 90, 95, 99, 99.9)), strict=True):
        exact = ordered[math.ceil(q / 100 * len(ordered)) - 1]  # nearest rank
        assert got is not None
        assert exact <= got <= exact + 1.0


def test_values_past_sixty_seconds_overflow_to_the_exact_maximum() -> None:
    histogram = RunHistogram()
    for v in (10.0, 20.0, 75_000.0, 90_000.0):
        histogram.record(v)
    assert histogram.percentiles((50, 99)) == [21.0, 90_000.0]
    assert histogram.count_above(1500) == 2


def test_greeting_and_reply_latency_are_kept_apart_and_missing_latency_is_skipped(stats: VoiceStats) -> None:
    stats.turn(greeting(900.0))
    stats.turn(reply(400.0))
    stats.turn(reply(None, status="no_response"))
    snap = stats.snapshot()
    assert snap["response_latency_ms"]["window"]["count"] == 1
    assert snap["response_latency_ms"]["window"]["max"] == 400.0
    assert snap["greeting_latency_ms"]["run"]["max"] == 900.0
    assert snap["turns"] == {"total": 3, "by_status": {"ok": 2, "no_response": 1}}


def test_window_forgets_old_turns_while_the_run_keeps_them(stats: VoiceStats, clock: Clock) -> None:
    stats.turn(reply(1000.0, gaps=[2000.0]))
    clock.now = 30.0
    stats.turn(reply(100.0, gaps=[50.0]))
    clock.now = 61.0
    snap = stats.snapshot()
    assert snap["response_latency_ms"]["window"]["count"] == 1
    assert snap["response_latency_ms"]["window"]["max"] == 100.0
    assert snap["gaps_ms"]["window"] == {"count": 1, "p95": 50.0, "max": 50.0, "dead_air": 0}
    assert snap["response_latency_ms"]["run"]["count"] == 2
    assert snap["response_latency_ms"]["run"]["max"] == 1000.0
    assert snap["gaps_ms"]["run"]["dead_air"] == 1
    clock.now = 91.0
    snap = stats.snapshot()
    assert snap["response_latency_ms"]["window"] == {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    assert snap["gaps_ms"]["window"]["max"] is None
    assert snap["response_latency_ms"]["run"]["count"] == 2


def test_silence_gaps_count_dead_air_per_gap_and_per_turn(clock: Clock) -> None:
    stats = VoiceStats(lateness_limit_ms=5.0, clock=clock, dead_air_ms=1500.0)
    stats.turn(reply(300.0, gaps=[100.0, 1600.0, 2500.0]))  # one turn, two dead-air gaps
    stats.turn(reply(300.0, gaps=[1500.0]))  # exactly the limit is not dead air (> limit is)
    gaps = stats.snapshot()["gaps_ms"]
    assert gaps["window"]["dead_air"] == 2
    assert gaps["window"]["max"] == 2500.0
    assert gaps["run"]["dead_air"] == 2
    assert gaps["run"]["dead_air_turns"] == 1
    assert gaps["run"]["count"] == 4


def test_active_calls_outcomes_and_reasons(stats: VoiceStats) -> None:
    for worker in ("w1", "w1", "w2"):
        stats.call_started(worker)
    stats.call_ended({"outcome": "completed", "reason": "script done"}, "w1")
    stats.call_ended({"outcome": "dropped", "reason": "1006 abnormal closure"}, "w2")
    snap = stats.snapshot()
    assert snap["active_calls"] == {"total": 1, "by_worker": {"w1": 1}}
    assert snap["calls"]["by_outcome"] == {"completed": 1, "dropped": 1}
    assert snap["calls"]["reasons"] == {"1006 abnormal closure": 1}  # a completed call's reason is no failure
    assert (snap["calls"]["started"], snap["calls"]["ended"]) == (3, 2)


def test_worker_gone_stops_counting_its_calls_and_late_ends_do_not_go_negative(stats: VoiceStats) -> None:
    stats.call_started("w1")
    stats.call_started("w1")
    stats.call_started("w2")
    stats.worker_gone("w1")
    assert stats.snapshot()["active_calls"] == {"total": 1, "by_worker": {"w2": 1}}
    stats.call_ended({"outcome": "error", "reason": "worker lost"}, "w1")  # its record arrives after all
    assert stats.snapshot()["active_calls"] == {"total": 1, "by_worker": {"w2": 1}}
    assert stats.snapshot()["calls"]["by_outcome"] == {"error": 1}


def test_lateness_histogram_json_round_trips() -> None:
    histogram = LatenessHistogram()
    for s in (0.0, 0.00015, 0.002, 0.0021, 2.5):
        histogram.record(s)
    back = lateness_from_json(json.loads(json.dumps(lateness_to_json(histogram))))
    assert back == histogram


@pytest.mark.parametrize("broken", [
    {"bin_s": 0.001, "bins": [], "overflow": 0, "total": 0, "maximum": 0.0, "sum": 0.0},  # another bin width
    {"bin_s": 0.0001, "bins": [[3, 2]], "overflow": 0, "total": 5, "maximum": 0.0, "sum": 0.0},  # total off
    {"bin_s": 0.0001, "bins": [[10_000, 1]], "overflow": 0, "total": 1, "maximum": 0.0, "sum": 0.0},  # no such bin
])
def test_lateness_from_json_refuses_histograms_it_cannot_merge(broken: dict) -> None:
    with pytest.raises(ValueError):
        lateness_from_json(broken)


def test_lateness_merges_workers_and_a_new_cumulative_snapshot_replaces_the_old(stats: VoiceStats) -> None:
    stats.lateness("w1", lateness_json(*[0.0005] * 600))
    stats.lateness("w2", lateness_json(*[0.0005] * 600))
    assert stats.snapshot()["lateness"]["frames"] == 1200
    # w1's next report is cumulative: 600 old + 400 new frames, 20 of them 8 ms late. Replaced, not added.
    stats.lateness("w1", lateness_json(*[0.0005] * 980, *[0.008] * 20))
    lateness = stats.snapshot()["lateness"]
    assert lateness["frames"] == 1600
    assert lateness["workers"] == 2
    assert lateness["max_ms"] == 8.0
    # 20 late frames of 1600 (1.25 %) put p99 at 8 ms; added to w1's old snapshot they would be 20 of 2200 (0.9 %)
    assert lateness["p99_ms"] == 8.0


def test_run_is_invalid_when_merged_lateness_p99_is_above_the_limit(stats: VoiceStats) -> None:
    stats.lateness("w1", lateness_json(*[0.0005] * 1000))
    stats.lateness("w2", lateness_json(*[0.0072] * 30))  # 30 of 1030 frames (2.9 %) 7.2 ms late: p99 is 7.2 ms
    validity = stats.snapshot()["validity"]
    assert validity["valid"] is False
    assert validity["reason"] == ("the harness, not the agent, was the bottleneck: pacing lateness p99 7.2 ms > 5 ms")
    stats.lateness("w2", lateness_json(*[0.001] * 30))
    assert stats.snapshot()["validity"]["valid"] is True


def test_too_few_frames_stays_valid_and_says_so(stats: VoiceStats) -> None:
    stats.lateness("w1", lateness_json(*[0.050] * 999))  # awful, but 999 frames are not enough to judge
    validity = stats.snapshot()["validity"]
    assert validity["valid"] is True
    assert validity["judged"] is False
    assert validity["reason"].startswith("not enough frames yet (999 of 1000)")
    assert "p99 so far 50 ms (above the limit)" in validity["reason"] and "at the end judges every frame" in \
        validity["reason"]


def test_history_takes_one_point_per_period_and_stays_bounded(clock: Clock) -> None:
    stats = VoiceStats(lateness_limit_ms=5.0, clock=clock, history_every_s=5.0, history_len=4)
    stats.call_started("w1")
    for second in range(0, 12):
        clock.now = float(second)
        stats.turn(reply(100.0 + second, gaps=[10.0 * second]))
    history = stats.snapshot()["history"]
    assert [p["t"] for p in history] == [0.0, 5.0, 10.0]
    assert history[1] == {"t": 5.0, "latency_p95_ms": pytest.approx(104.8), "max_gap_ms": 50.0, "active_calls": 1,
                          "lateness_p99_ms": None}
    for second in range(12, 100):
        clock.now = float(second)
        stats.snapshot()
    assert len(stats.snapshot()["history"]) == 4


def test_many_turns_do_not_grow_the_structures(clock: Clock) -> None:
    stats = VoiceStats(lateness_limit_ms=5.0, clock=clock, window_cap=1000, history_len=10)
    histogram_sizes = (stats._latency_run.counts.size, stats._gaps_run.counts.size)
    for i in range(20_000):
        clock.now = i * 0.001  # 20 s of 1000 turns a second: all inside the 60 s window
        stats.turn(reply(float(i % 3000), gaps=[float(i % 2000)], status=("ok", "mismatch")[i % 2]))
        stats.call_ended({"outcome": "dropped", "reason": f"close code {i}"}, "w1")  # variable reason text
    snap = stats.snapshot()
    assert snap["response_latency_ms"]["window"]["count"] == 1000  # capped, newest kept
    assert snap["response_latency_ms"]["run"]["count"] == 20_000
    assert snap["window_capped"] > 0
    assert len(snap["calls"]["reasons"]) <= 51
    assert sum(snap["calls"]["reasons"].values()) == 20_000
    assert len(stats._latency.values) == len(stats._gaps.values) == 1000
    assert (stats._latency_run.counts.size, stats._gaps_run.counts.size) == histogram_sizes
    assert len(snap["history"]) <= 10


def test_snapshot_is_json(stats: VoiceStats) -> None:
    stats.call_started("w1")
    stats.turn(greeting(800.0))
    stats.turn(reply(500.0, gaps=[30.0]))
    stats.lateness("w1", lateness_json(0.001))
    stats.call_ended({"outcome": "completed"}, "w1")
    assert json.loads(json.dumps(stats.snapshot()))["calls"]["by_outcome"] == {"completed": 1}


def test_the_load_start_places_fault_windows_on_the_history_axis(clock: Clock, stats: VoiceStats) -> None:
    assert stats.snapshot()["load_start_t"] is None  # no load yet: the page draws no fault band
    clock.now += 12.5
    stats.load_started()
    clock.now += 30.0
    stats.load_started()  # a second test from the web UI: the run's time 0 stays the first
    assert stats.snapshot()["load_start_t"] == 12.5
