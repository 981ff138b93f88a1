"""What a fault did: calls and turns in its window, against hand-made records with known answers; and the
Prometheus counters a probe reads."""

from __future__ import annotations

from harness.chaos.effects import fault_effects
from harness.chaos.probes import prometheus_counters

WALL0, MONO0 = 1_000_000.0, 50.0  # the load started at these clock readings


def call(call_id: int, start_s: float, duration: float, outcome: str, turns: list[tuple[float, float | None]]) -> dict:
    return {"call_id": call_id, "started_at": WALL0 + start_s, "duration_s": duration, "outcome": outcome,
            "turns": [{"kind": "reply", "listen_from": MONO0 + at, "response_latency_ms": latency,
                       "status": "ok" if latency is not None else "no_response", "max_gap_ms": 0.0}
                      for at, latency in turns]}


def window(index: int, applied: float, removed: float | None) -> dict:
    return {"index": index, "label": f"fault {index}", "applied_at_s": applied, "removed_at_s": removed,
            "error": None}


def test_calls_and_turns_are_assigned_to_the_fault_window_they_overlap() -> None:
    calls = [
        call(0, 0, 8, "completed", [(2, 500.0), (6, 520.0)]),  # before the fault
        call(1, 8, 10, "timed_out", [(12, None), (14, 3000.0)]),  # across it
        call(2, 12, 5, "failed_to_connect", []),  # inside it
        call(3, 25, 6, "completed", [(27, 510.0)]),  # after it: service restored
    ]
    effects = fault_effects([window(0, 10.0, 20.0)], calls, load_start_mono=MONO0, load_start_wall=WALL0,
                            run_end_s=40.0)
    during = effects[0]["effect"]
    assert during["calls_during"] == 2
    assert during["outcomes_during"] == {"timed_out": 1, "failed_to_connect": 1}
    assert during["turns"] == 2 and during["statuses"] == {"no_response": 1, "ok": 1}
    assert during["response_latency_ms"]["max"] == 3000.0
    assert during["calls_started_after"] == 1 and during["outcomes_after"] == {"completed": 1}
    outside = effects[-1]
    assert outside["label"] == "outside any fault"
    assert outside["effect"]["calls_during"] == 2  # calls 0 and 3 never met the fault
    assert outside["effect"]["response_latency_ms"]["count"] == 3


def test_a_fault_still_applied_at_the_end_runs_to_the_end_and_a_failed_one_has_no_effect() -> None:
    calls = [call(0, 30, 5, "dropped", [(31, None)])]
    still = window(0, 25.0, None)
    failed = {**window(1, 5.0, 5.0), "error": "RuntimeError: no"}
    effects = fault_effects([still, failed], calls, load_start_mono=MONO0, load_start_wall=WALL0, run_end_s=40.0)
    assert effects[0]["effect"]["outcomes_during"] == {"dropped": 1}
    assert effects[1]["effect"] is None


def test_prometheus_counters_are_read_with_their_labels() -> None:
    text = """# HELP voicechaos_runtime_provider_errors_total Provider errors
# TYPE voicechaos_runtime_provider_errors_total counter
voicechaos_runtime_provider_errors_total{provider="deepgram",role="stt",status="429"} 12.0
voicechaos_runtime_provider_errors_total{provider="openai",role="llm",status="500"} 1
voicechaos_runtime_active_calls 3
voicechaos_runtime_upload_seconds_bucket{le="0.5"} 4
voicechaos_runtime_recordings_uploaded_total 7 1700000000000
"""
    assert prometheus_counters(text) == {
        'voicechaos_runtime_provider_errors_total{provider="deepgram",role="stt",status="429"}': 12.0,
        'voicechaos_runtime_provider_errors_total{provider="openai",role="llm",status="500"}': 1.0,
        "voicechaos_runtime_recordings_uploaded_total": 7.0,
    }


def test_a_fake_serving_two_dependencies_is_read_once() -> None:
    from harness.session import _stats_urls

    controls = {"stt": "http://127.0.0.1:1/_chaos", "tts": "http://127.0.0.1:2/_chaos", "storage": None,
                "tts_fallback": "http://127.0.0.1:1/_chaos"}
    assert _stats_urls(controls) == {"stt": "http://127.0.0.1:1/_chaos/stats",
                                     "tts": "http://127.0.0.1:2/_chaos/stats"}
