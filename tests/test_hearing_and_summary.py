from __future__ import annotations

import pytest

from harness.audio import g711
from harness.hearing import Ear
from harness.scenario import Targets
from harness.summary import summarize
from harness.testing.known_agent import phrase_mulaw

SILENCE = bytes([g711.MULAW_SILENCE])


def test_ear_locates_audible_stretches_and_gaps_on_the_playout_timeline() -> None:
    ear = Ear()
    first = phrase_mulaw("one.")
    second = phrase_mulaw("two.")
    audio = first + SILENCE * 4000 + second  # 0.5 s of silence between them
    closed, heard = [], []
    # fed in 20 ms pieces starting at t = 10.0, as the playout model would report them
    for i in range(0, len(audio), 160):
        c, h = ear.hear(10.0 + i / 8000, audio[i : i + 160])
        closed += c
        heard += h
    c, h = ear.flush()
    closed += c
    heard += h
    assert [h.text for h in heard] == ["one.", "two."]
    assert len(closed) == 2
    assert closed[0].start == pytest.approx(10.0, abs=0.006)
    assert closed[0].end == pytest.approx(10.0 + len(first) / 8000, abs=0.006)
    gap = closed[1].start - closed[0].end
    assert gap == pytest.approx(0.5, abs=0.011)


def test_ear_bridges_a_break_in_the_timeline_and_reports_garbled_audio() -> None:
    ear = Ear()
    phrase = phrase_mulaw("hello there.")
    half = len(phrase) // 2
    _, heard_a = ear.hear(0.0, phrase[:half])
    # the rest never arrives; new audio starts 2 s later (an underrun), then flush
    _, heard_b = ear.hear(2.0, phrase_mulaw("again."))
    _, heard_c = ear.flush()
    heard = heard_a + heard_b + heard_c
    assert [h.text for h in heard if h.text] == ["again."]
    assert any(h.text is None for h in heard)  # the cut phrase is undecodable, never a wrong text


def _turn(**fields):
    turn = {"kind": "reply", "response_latency_ms": 500.0, "gaps_ms": [], "max_gap_ms": 0.0, "first_audio_at": 1.0,
            "heard": ["a."], "undecodable": 0, "expected": ["a."], "status": "ok", "barge_in": False,
            "barge_in_reaction_ms": None}
    turn.update(fields)
    return turn


def test_summary_judges_each_target_and_never_passes_what_it_did_not_measure() -> None:
    calls = [
        {"outcome": "completed", "turns": [_turn(response_latency_ms=ms) for ms in (400.0, 500.0, 600.0)]},
        {"outcome": "completed", "turns": [_turn(gaps_ms=[1800.0], max_gap_ms=1800.0, response_latency_ms=700.0)]},
        {"outcome": "dropped", "turns": [_turn(heard=[], undecodable=2, status="garbled")]},
    ]
    lateness = {"frames": 10, "p50_ms": 0.5, "p99_ms": 1.0, "max_ms": 2.0, "mean_ms": 0.6}
    summary = summarize(calls, lateness, Targets())
    rows = {row["metric"]: row for row in summary["targets"]}
    assert summary["calls"]["outcomes"] == {"completed": 2, "dropped": 1}
    assert rows["call_success_rate"]["measured"] == pytest.approx(0.6667) and rows["call_success_rate"][
        "verdict"] == "fail"
    assert summary["response_latency_ms"]["p50"] == 500.0
    assert rows["max_silence_gap_ms"]["measured"] == 1800.0 and rows["max_silence_gap_ms"]["verdict"] == "fail"
    assert summary["silence_gaps_ms"]["dead_air_turns"] == 1
    assert rows["phrase_decode_rate"]["measured"] == pytest.approx(4 / 6, abs=1e-3)
    assert rows["barge_in_reaction_p95_ms"]["verdict"] == "not_measured"
    assert summary["verdict"] == "fail"


def test_an_overloaded_harness_makes_the_run_invalid_not_the_agent_slow() -> None:
    calls = [{"outcome": "completed", "turns": [_turn(response_latency_ms=2000.0)]}]
    summary = summarize(calls, {"frames": 5, "p50_ms": 3.0, "p99_ms": 40.0, "max_ms": 80.0, "mean_ms": 5.0},
                        Targets())
    assert summary["verdict"] == "invalid"
    assert "harness" in summary["verdict_reason"]


def test_connected_calls_without_the_harness_lateness_are_invalid_not_a_pass() -> None:
    calls = [{"outcome": "completed", "connect_ms": 12.0, "turns": [_turn(response_latency_ms=500.0)]}]
    summary = summarize(calls, {}, Targets())
    assert summary["verdict"] == "invalid"
    assert "unknown although 1 call(s) connected" in summary["verdict_reason"]


def test_an_empty_run_is_not_a_pass() -> None:
    summary = summarize([], {"frames": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None},
                        Targets())
    assert summary["verdict"] != "pass"


def test_calls_that_never_connected_fail_the_run_they_do_not_make_it_invalid() -> None:
    calls = [{"outcome": "failed_to_connect", "turns": []}] * 2
    summary = summarize(calls, {"frames": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None},
                        Targets())
    assert summary["verdict"] == "fail"
    assert "call_success_rate" in summary["verdict_reason"]


def test_worker_availability_counts_calls_answered_and_recordings_lost_counts_the_bucket() -> None:
    greeted = _turn(kind="greeting")
    silent = _turn(kind="greeting", first_audio_at=None, heard=[], status="no_response")
    calls = [
        {"outcome": "completed", "turns": [greeted, _turn()]},
        {"outcome": "rejected", "turns": []},  # refused at capacity
        {"outcome": "timed_out", "turns": [silent]},  # connected, never greeted
        {"outcome": "dropped", "turns": [greeted]},  # answered, then lost: a dropped call, not unavailability
    ]
    lateness = {"frames": 10, "p50_ms": 0.5, "p99_ms": 1.0, "max_ms": 2.0, "mean_ms": 0.6}
    recordings = {"arrived": 1, "calls_with_media": 3, "missing": 2, "listing_error": None}
    rows = {row["metric"]: row for row in summarize(calls, lateness, Targets(), recordings)["targets"]}
    assert rows["worker_availability"]["measured"] == 0.5 and rows["worker_availability"]["verdict"] == "fail"
    assert rows["recordings_lost"]["measured"] == 2 and rows["recordings_lost"]["verdict"] == "fail"
    without_store = {row["metric"]: row for row in summarize(calls, lateness, Targets())["targets"]}
    assert without_store["recordings_lost"]["verdict"] == "not_measured"
    failed_listing = {**recordings, "listing_error": "timeout"}
    rows = {row["metric"]: row for row in summarize(calls, lateness, Targets(), failed_listing)["targets"]}
    assert rows["recordings_lost"]["verdict"] == "not_measured"
