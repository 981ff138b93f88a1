"""End to end: concurrent simulated Twilio callers, the reference runtime and the fake providers, all real, on loopback.

This is the claim the demo makes: every call completes and every agent phrase decodes to what the dialog said.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from harness.run import run_scenario
from harness.scenario import load_scenario, scenario_from_mapping

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


async def test_ten_concurrent_calls_through_the_embedded_stack(tmp_path: Path) -> None:
    demo = load_scenario(ROOT / "scenarios" / "demo.yaml")
    data = demo.model_dump(mode="json")
    data["callers"] = {"count": 10, "arrival_rate": 50.0, "concurrency": 10}  # all ten at once
    data["limits"]["duration"] = 240
    scenario = scenario_from_mapping(data, "e2e")
    out = io.StringIO()
    # the agent definition is found next to the demo scenario
    result = await run_scenario(scenario, ROOT / "scenarios" / "demo.yaml", runs_dir=tmp_path / "runs", out=out)
    report = out.getvalue()
    summary = result.summary
    assert summary["calls"]["outcomes"] == {"completed": 10}, report
    assert summary["phrases"]["undecodable"] == 0, report
    assert summary["phrases"]["decode_rate"] == 1.0
    assert summary["phrases"]["expected_ok"] == summary["phrases"]["expected_turns"] == 40, report
    # every call heard the greeting, three replies and the goodbye, in order
    for call in result.calls:
        heard = [phrase for turn in call.turns for phrase in turn.heard]
        assert heard[0].startswith("Hello, thanks for calling Acme Dental.")
        assert heard[-1] == "Thanks for calling Acme Dental. Goodbye!"
        assert all(turn.status == "ok" for turn in call.turns), [t.status for t in call.turns]
    # the concurrency was real: all ten calls were in progress at the same moment
    starts = sorted(call.started_at for call in result.calls)
    ends = sorted(call.started_at + (call.duration_s or 0) for call in result.calls)
    assert starts[-1] < ends[0]
    events = (result.run_dir / "events.jsonl").read_text().splitlines()
    assert sum(1 for line in events if json.loads(line)["event"] == "call_ended") == 10
    # the runtime's own log shows the same ten calls, and it was stopped by the harness
    runtime_log = (result.run_dir / "stack" / "runtime.log").read_text()
    assert runtime_log.count("POST /voice") == 10
    assert "stopping" in runtime_log
