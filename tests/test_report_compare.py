"""--baseline: each metric's change and its regression flag, on hand-made summaries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reports.compare import ADDED, BETTER, BOTH, REMOVED, SAME, WORSE, Change, compare


def target(metric: str, measured: float | None, verdict: str = "pass", *, lower: bool = True,
           unit: str = "ms") -> dict[str, Any]:
    return {"group": "caller experience", "metric": metric, "title": metric, "target": "", "alert": None,
            "measured": measured, "unit": unit, "verdict": verdict, "note": "", "alerting": False,
            "lower_is_better": lower}


def summary(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"verdict": "pass", "scenario": "demo", "targets": list(rows)}


def by_metric(changes: list[Change]) -> dict[str, Change]:
    return {change.metric: change for change in changes}


def test_latency_change_absolute_relative_and_tolerance() -> None:
    base = summary(target("response_latency_p95_ms", 500.0), target("max_silence_gap_ms", 1000.0),
                   target("stt_latency_p95_ms", 100.0))
    cur = summary(target("response_latency_p95_ms", 600.0), target("max_silence_gap_ms", 1050.0),
                  target("stt_latency_p95_ms", 80.0))
    found = by_metric(compare(cur, base))
    latency = found["response_latency_p95_ms"]
    assert latency.status == BOTH
    assert latency.absolute == pytest.approx(100.0) and latency.relative == pytest.approx(0.2)
    assert latency.direction == WORSE and latency.regression
    gap = found["max_silence_gap_ms"]
    assert gap.direction == WORSE and not gap.regression  # 5 % worse: inside the 10 % tolerance
    stt = found["stt_latency_p95_ms"]
    assert stt.direction == BETTER and not stt.regression and stt.relative == pytest.approx(-0.2)
    # A tighter tolerance turns the 5 % into a regression.
    assert by_metric(compare(cur, base, tolerance=0.04))["max_silence_gap_ms"].regression


def test_availability_drop_is_judged_on_the_bad_share() -> None:
    base = summary(target("worker_availability", 1.0, lower=False, unit=""),
                   target("call_success_rate", 0.99, lower=False, unit=""),
                   target("phrase_decode_rate", 0.95, lower=False, unit=""))
    cur = summary(target("worker_availability", 0.98, lower=False, unit=""),
                  target("call_success_rate", 0.985, lower=False, unit=""),
                  target("phrase_decode_rate", 0.99, lower=False, unit=""))
    found = by_metric(compare(cur, base))
    availability = found["worker_availability"]
    # -2 % relative on the value, but calls refused went from none to 2 %: a regression.
    assert availability.relative == pytest.approx(-0.02)
    assert availability.direction == WORSE and availability.regression
    success = found["call_success_rate"]
    # 1 % failed -> 1.5 % failed: +50 % on the bad share, although the value only moved 0.5 %.
    assert success.direction == WORSE and success.regression
    assert found["phrase_decode_rate"].direction == BETTER and not found["phrase_decode_rate"].regression


def test_percentage_rate_uses_its_bad_share_too() -> None:
    base = summary(target("encoding_compatibility_pct", 100.0, lower=False, unit="%"))
    cur = summary(target("encoding_compatibility_pct", 99.0, lower=False, unit="%"))
    assert by_metric(compare(cur, base))["encoding_compatibility_pct"].regression


def test_lower_is_better_growing_from_zero_is_a_regression() -> None:
    base = summary(target("recordings_lost", 0.0, unit=""))
    cur = summary(target("recordings_lost", 1.0, unit=""))
    change = by_metric(compare(cur, base))["recordings_lost"]
    assert change.relative is None and change.absolute == 1.0
    assert change.regression


def test_pass_to_fail_is_a_regression_even_within_tolerance() -> None:
    base = summary(target("response_latency_p95_ms", 790.0, "pass"))
    cur = summary(target("response_latency_p95_ms", 810.0, "fail"))
    change = by_metric(compare(cur, base))["response_latency_p95_ms"]
    assert change.relative == pytest.approx(20 / 790)
    assert change.regression and "pass -> fail" in change.reason
    # fail -> fail with the same small move is not a new regression.
    still = by_metric(compare(cur, summary(target("response_latency_p95_ms", 790.0, "fail"))))
    assert not still["response_latency_p95_ms"].regression


def test_unchanged_metric_is_same() -> None:
    change = compare(summary(target("m", 3.0)), summary(target("m", 3.0)))[0]
    assert change.direction == SAME and not change.regression and change.absolute == 0.0


def test_added_removed_and_unmeasured_are_never_regressions() -> None:
    base = summary(target("old_metric", 5.0), target("memory_growth_mb_per_1000_calls", 2.0))
    cur = summary(target("new_metric", 7.0, "fail"), target("memory_growth_mb_per_1000_calls", None, "not_measured"))
    changes = compare(cur, base)
    assert [c.metric for c in changes] == ["new_metric", "memory_growth_mb_per_1000_calls", "old_metric"]
    found = by_metric(changes)
    assert found["new_metric"].status == ADDED and found["new_metric"].current == 7.0
    assert found["old_metric"].status == REMOVED and found["old_metric"].baseline == 5.0
    unmeasured = found["memory_growth_mb_per_1000_calls"]
    assert unmeasured.status == BOTH and unmeasured.direction is None and unmeasured.absolute is None
    assert not any(c.regression for c in changes)


def test_older_summary_without_lower_is_better_reads_the_target_sign() -> None:
    base = {"targets": [{"metric": "call_success_rate", "target": ">= 0.999", "measured": 1.0, "verdict": "pass"},
                        {"metric": "response_latency_p95_ms", "target": "<= 800 ms", "measured": 500.0,
                         "verdict": "pass"}]}
    cur = {"targets": [{"metric": "call_success_rate", "target": ">= 0.999", "measured": 0.9, "verdict": "fail"},
                       {"metric": "response_latency_p95_ms", "target": "<= 800 ms", "measured": 400.0,
                        "verdict": "pass"}]}
    found = by_metric(compare(cur, base))
    assert found["call_success_rate"].direction == WORSE and not found["call_success_rate"].lower_is_better
    assert found["response_latency_p95_ms"].direction == BETTER


def test_to_json_round_trips_through_json() -> None:
    change = compare(summary(target("m", 2.0)), summary(target("m", 1.0)))[0]
    data = json.loads(json.dumps(change.to_json()))
    assert data["metric"] == "m" and data["regression"] is True and data["relative"] == 1.0
    assert data["direction"] == WORSE and data["status"] == BOTH
