"""A small hand-made run folder whose every figure is known, for the report's tests.

Load starts at mono 1000.0 / wall 1_800_000_000.0. Four calls:
- 0: completed; greeting 100 ms; reply 500 ms (one 200 ms gap); reply 1200 ms (high latency)
- 1: completed; greeting 150 ms; reply 700 ms with a 1800 ms gap (dead air); reply said the wrong thing (mismatch)
- 2: rejected, no turn (started at 20 s, inside the fault window 15-30 s)
- 3: dropped; greeting 120 ms; reply garbled (2 undecodable phrases); started at 25 s (inside the window)
Runtime readings at t = 0, 5, 10, 15 s: RSS 100, 102, 104, 106 MB while calls ended go 0, 10, 20, 30 (200 MB per
1000 calls, 1440 MB per hour); budget 200 MB; CPU seconds 0, 1, 2, 3.5 (20 %, 20 %, 30 %); breaker trips 0 -> 2;
workflow events ok 9, failed 1; emission 10 events all in the 0.5-1 ms bucket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MONO, WALL = 1000.0, 1_800_000_000.0


def turn(index: int, kind: str, at: float, latency: float | None, *, gaps: list[float] | None = None,
         heard: int = 2, undecodable: int = 0, status: str = "ok", caller_text: str | None = None,
         expected: bool = True) -> dict[str, Any]:
    first = None if latency is None else MONO + at + latency / 1000
    return {"index": index, "step": index, "kind": kind, "caller_text": caller_text,
            "expected": ["x"] if expected else [], "listen_from": MONO + at, "caller_speech_start": None,
            "first_audio_at": first, "last_audio_end": first, "response_latency_ms": latency,
            "gaps_ms": gaps or [], "heard": ["p"] * heard, "undecodable": undecodable,
            "undecodable_reasons": [], "cut_phrases": 0, "barge_in": False, "barge_in_reaction_ms": None,
            "stray_clears": 0, "dtmf": "", "status": status, "max_gap_ms": max(gaps or [0.0])}


def call(call_id: int, start: float, duration: float, outcome: str, turns: list[dict[str, Any]],
         reason: str = "") -> dict[str, Any]:
    return {"call_id": call_id, "call_sid": f"CA{call_id:032d}", "stream_sid": f"MZ{call_id:032d}",
            "outcome": outcome, "reason": reason or outcome, "started_at": WALL + start,
            "connect_ms": None if outcome == "rejected" else 5.0, "duration_s": duration, "turns": turns,
            "frames_sent": 100, "protocol_errors": 0, "close_code": 1000}


CALLS = [
    call(0, 0.0, 12.0, "completed", [turn(0, "greeting", 0.0, 100.0), turn(1, "reply", 4.0, 500.0, gaps=[200.0],
                                                                            caller_text="hi"),
                                     turn(2, "reply", 8.0, 1200.0, caller_text="tuesday")]),
    call(1, 2.0, 12.0, "completed", [turn(0, "greeting", 2.0, 150.0), turn(1, "reply", 6.0, 700.0, gaps=[1800.0],
                                                                            caller_text="hi"),
                                     turn(2, "reply", 10.0, 600.0, status="mismatch", caller_text="book it")]),
    call(2, 20.0, 0.1, "rejected", [], reason="the platform refused the stream"),
    call(3, 25.0, 6.0, "dropped", [turn(0, "greeting", 25.0, 120.0),
                                   turn(1, "reply", 29.0, 400.0, heard=0, undecodable=2, status="garbled",
                                        caller_text="hi")], reason="the websocket closed mid-script"),
]

TARGETS = {"response_latency_p95_ms": 800.0, "dead_air_ms": 1500.0, "worker_availability": 0.999}


def _emit_buckets(prefix: str, counts: dict[str, float]) -> dict[str, float]:
    return {f'{prefix}_bucket{{le="{le}"}}': v for le, v in counts.items()}


def readings() -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate((0.0, 5.0, 10.0, 15.0)):
        samples = {
            "runtime_process_resident_memory_bytes": (100 + 2 * i) * 2**20,
            'runtime_calls_total{outcome="completed"}': 10.0 * i,
            "runtime_memory_budget_bytes": 200 * 2**20,
            "process_cpu_seconds_total": (0.0, 1.0, 2.0, 3.5)[i],
            "runtime_active_calls": (0, 4, 8, 2)[i], "runtime_capacity": 10,
            'runtime_breaker_trips_total{provider="deepgram",role="stt"}': 0.0 if i < 3 else 2.0,
            'runtime_breaker_state{provider="deepgram",role="stt"}': 2.0 if i == 3 else 0.0,
            'runtime_workflow_events_total{outcome="ok"}': 0.0 if i == 0 else 9.0,
            'runtime_workflow_events_total{outcome="failed"}': 0.0 if i == 0 else 1.0,
        }
        n = 0.0 if i == 0 else 10.0
        samples.update(_emit_buckets("runtime_workflow_emit_seconds",
                                     {"0.0005": 0.0, "0.001": n, "0.01": n, "+Inf": n}))
        samples["runtime_workflow_emit_seconds_count"] = n
        out.append({"t": t, "samples": samples})
    return out


def write_run(run_dir: Path, *, calls: list[dict[str, Any]] | None = None, runtime: bool = True,
              summary: bool = True, faults: bool = True, recordings: bool = True,
              targets: dict[str, float] | None = None) -> Path:
    run_dir.mkdir(parents=True)
    calls = CALLS if calls is None else calls
    config = {"name": "fixture", "targets": targets or TARGETS,
              "faults": [{"label": "storage stall", "target": "storage", "at": 15.0, "duration": 15.0}]}
    lines = [{"event": "run_started", "time": WALL - 2, "scenario": "fixture", "config": config},
             {"event": "load_started", "time": WALL, "mono": MONO, "wall": WALL}]
    for item in calls:
        lines.append({"event": "call_started", "time": item["started_at"], "call_id": item["call_id"]})
        lines += [{"event": "turn", "time": item["started_at"], "call_id": item["call_id"], **t}
                  for t in item["turns"]]
        lines.append({"event": "call_ended", "time": item["started_at"] + item["duration_s"], **item})
    if faults:
        lines.append({"event": "fault_applied", "time": WALL + 15, "fault": 0, "label": "storage stall",
                      "target": "storage", "at_s": 15.0})
        lines.append({"event": "fault_removed", "time": WALL + 30, "fault": 0, "label": "storage stall",
                      "target": "storage", "at_s": 30.0})
    if recordings:
        lines.append({"event": "recordings_counted", "time": WALL + 40, "calls_with_media": 3, "arrived": 2,
                      "missing": 1, "listing_error": None})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if runtime:
        (run_dir / "runtime_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in readings()))
    if summary:
        (run_dir / "summary.json").write_text(json.dumps({
            "scenario": "fixture", "config": config,
            "harness_lateness": {"p50_ms": 0.2, "p99_ms": 1.5, "max_ms": 3.0, "frames": 1000}}))
    return run_dir
