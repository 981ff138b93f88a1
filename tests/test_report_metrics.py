"""Each metric of the report on the hand-made run folder of report_fixtures, whose answers are known."""

from __future__ import annotations

import json

import pytest

from reports.metrics import fault_windows, judge
from reports.model import FAIL, NOT_MEASURED, PASS, TRACKED
from reports.runfolder import load_run
from tests.report_fixtures import CALLS, write_run


@pytest.fixture
def rows(tmp_path):
    data = load_run(write_run(tmp_path / "run"))
    rows, verdict, reason = judge(data)
    return {r.metric: r for r in rows}, verdict, reason, data


def test_caller_side_figures(rows):
    by, _, _, _ = rows
    assert by["call_success_rate"].measured == 0.5  # 2 of 4 completed
    assert by["worker_availability"].measured == 0.75  # the rejected call was not answered
    assert by["worker_availability"].verdict == FAIL
    # replies: 500, 1200, 700, 600, 400 -> p95 by linear interpolation between 700 and 1200
    assert by["response_latency_p95_ms"].measured == pytest.approx(1100.0)
    assert by["max_silence_gap_ms"].measured == 1800.0
    assert "1 turns with dead air" in by["max_silence_gap_ms"].note
    assert by["phrase_decode_rate"].measured == 0.875  # 7 turns with 2 phrases heard each, 2 garbled
    assert by["recordings_lost"].measured == 1 and by["recordings_lost"].verdict == FAIL
    assert by["barge_in_reaction_p95_ms"].verdict == NOT_MEASURED
    # calls with agent audio: 0, 1, 3 (call 3 heard its greeting): all decodable somewhere
    assert by["encoding_compatibility_pct"].measured == 100.0
    assert by["harness_lateness_p99_ms"].measured == 1.5


def test_runtime_side_figures(rows):
    by, _, _, _ = rows
    assert by["memory_usage_pct"].measured == 53.0  # 106 MB of 200 MB
    assert by["memory_growth_mb_per_1000_calls"].measured == pytest.approx(200.0)
    assert by["memory_growth_mb_per_1000_calls"].verdict == TRACKED
    assert by["memory_growth_mb_per_hour"].measured == pytest.approx(1440.0)
    # CPU per interval 20, 20, 30 % -> p95 29 %
    assert by["cpu_usage_pct"].measured == pytest.approx(29.0)
    assert by["active_calls_pct"].measured == 80.0 and by["active_calls_pct"].alerting
    assert by["workflow_failure_rate"].measured == 0.1 and by["workflow_failure_rate"].verdict == FAIL
    assert by["workflow_failure_rate"].alerting  # 10 % is the alert line
    assert 0.5 <= by["event_emission_p95_ms"].measured <= 1.0
    assert by["event_emission_p95_ms"].verdict == PASS
    # 2 trips over the run's 31 s (the last call ends at 25 + 6 s)
    assert by["breaker_trips_per_hour"].measured == pytest.approx(round(2 / (31 / 3600), 1))
    assert by["stt_latency_p95_ms"].verdict == NOT_MEASURED  # no STT histogram in the readings
    assert by["packet_loss_pct"].verdict == NOT_MEASURED and "TCP" in by["packet_loss_pct"].note


def test_verdict_names_every_missed_target(rows):
    _, verdict, reason, _ = rows
    assert verdict == FAIL
    for metric in ("worker_availability", "recordings_lost", "response_latency_p95_ms", "workflow_failure_rate"):
        assert metric in reason
    assert "memory_usage_pct" not in reason


def test_availability_inside_the_fault_window(rows):
    _, _, _, data = rows
    [window] = fault_windows(data)
    # calls 2 (20 s, rejected) and 3 (25 s, answered) started inside 15-30 s
    assert (window["calls_started"], window["answered"], window["availability"]) == (2, 1, 0.5)


def test_late_harness_makes_the_run_invalid(tmp_path):
    run = write_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["harness_lateness"]["p99_ms"] = 12.0
    (run / "summary.json").write_text(json.dumps(summary))
    _, verdict, reason = judge(load_run(run))
    assert verdict == "invalid" and "harness" in reason


def test_unknown_harness_lateness_with_connected_calls_is_invalid_not_a_pass(tmp_path):
    # a Locust master that died before it sent its figures: the calls it forwarded are there, its timing is not
    good = [c for c in CALLS if c["outcome"] == "completed"]
    run = write_run(tmp_path / "run", calls=good, runtime=False, faults=False, recordings=False)
    summary = json.loads((run / "summary.json").read_text())
    summary["harness_lateness"] = {}
    summary["interrupted"] = "the Locust master ended before closing the run"
    (run / "summary.json").write_text(json.dumps(summary))
    _, verdict, reason = judge(load_run(run))
    assert verdict == "invalid", reason
    assert f"{len(good)} call(s) connected" in reason and "Locust master ended" in reason


def test_all_good_run_passes(tmp_path):
    good = [c for c in CALLS if c["outcome"] == "completed"]
    run = write_run(tmp_path / "run", calls=[{**c, "turns": [t for t in c["turns"] if t["status"] == "ok"
                                                             and (t["response_latency_ms"] or 0) < 800
                                                             and t["max_gap_ms"] < 1500]} for c in good],
                    runtime=False, faults=False, recordings=False)
    rows, verdict, reason = judge(load_run(run))
    assert verdict == PASS, reason
    by = {r.metric: r for r in rows}
    # without runtime readings nothing on the runtime's side passes by default
    assert by["memory_usage_pct"].verdict == NOT_MEASURED
    assert by["cpu_usage_pct"].verdict == NOT_MEASURED
    assert "not measured" in reason
