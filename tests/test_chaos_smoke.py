"""The chaos smoke scenario, as the README runs it: object storage stalls (a Toxiproxy ``timeout`` toxic) and the
primary STT answers 429 for 30 s under steady load, on the embedded stack. The run's log must show each fault
applied and rolled back, the runtime must have counted its upload errors and the 429s while they lasted, and calls
that start after the rollback must work again."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from harness.run import run_scenario
from harness.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "scenarios" / "chaos-smoke.yaml"

pytestmark = pytest.mark.e2e


def _counted(delta: dict[str, float], *fragments: str) -> float:
    return sum(v for k, v in delta.items() if all(f in k for f in fragments))


async def test_storage_stall_and_stt_rate_limit_are_applied_counted_and_rolled_back(tmp_path: Path) -> None:
    scenario = load_scenario(SMOKE)
    out = io.StringIO()
    result = await run_scenario(scenario, SMOKE, runs_dir=tmp_path / "runs", out=out)
    report = out.getvalue()
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]

    applied = {e["label"]: e for e in events if e["event"] == "fault_applied"}
    removed = {e["label"]: e for e in events if e["event"] == "fault_removed"}
    assert set(applied) == set(removed) == {"storage stalls", "primary STT rate-limited"}, report
    for label in applied:
        assert 15.0 <= applied[label]["at_s"] < 17.0, applied[label]
        assert 45.0 <= removed[label]["at_s"] < 47.0, removed[label]
        assert removed[label]["because"] == "scheduled end"
    assert not [e for e in events if e["event"] in ("fault_apply_failed", "fault_rollback_failed")], report

    faults = {f["label"]: f for f in result.summary["faults"]}
    storage = faults["storage stalls"]
    stt = faults["primary STT rate-limited"]
    # what the runtime itself counted while the faults were on
    assert _counted(storage["counters_delta"], "recording_upload_errors_total") >= 1, storage["counters_delta"]
    assert _counted(stt["counters_delta"], "provider_errors_total", "deepgram", "429") >= 1, stt["counters_delta"]
    # the fake Deepgram refused those streams itself (its own stats)
    assert _counted(stt["counters_delta"], "stt.", "429") >= 1, stt["counters_delta"]
    # calls inside the window suffered; calls started after the rollback came back
    assert stt["effect"]["outcomes_during"].get("completed", 0) < stt["effect"]["calls_during"], report
    after = stt["effect"]
    assert after["calls_started_after"] >= 3, report
    assert after["outcomes_after"] == {"completed": after["calls_started_after"]}, report
    # recordings: lost during the stall, arriving again after it
    recordings = result.summary["recordings"]
    assert recordings["missing"] >= 1 and recordings["arrived"] >= after["calls_started_after"], recordings
    assert "Faults (seconds after the load started)" in report
