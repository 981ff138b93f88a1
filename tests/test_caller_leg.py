"""Faults on the caller's own leg (issue 7, point 5, Twilio half): the callers' media streams go through a proxy of
their own, and a reset there mid-call ends that call as dropped, with the reason, while the run carries on."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from harness.chaos.faults import Fault
from harness.run import run_scenario
from harness.scenario import scenario_from_mapping

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def test_the_caller_leg_takes_network_faults_only() -> None:
    Fault.model_validate({"target": "caller_leg", "toxic": {"type": "latency", "attributes": {"latency": 100}}})
    with pytest.raises(ValueError, match="network path"):
        Fault.model_validate({"target": "caller_leg", "provider": {"kind": "rate_limit"}})


async def test_a_reset_on_the_caller_leg_drops_the_call_in_progress_and_the_run_carries_on(tmp_path: Path) -> None:
    scenario = scenario_from_mapping({
        "name": "caller-leg-reset",
        "target": {"embedded": {"agent": "agents/dental.yaml", "capacity": 10}},
        # calls start at 0, 4 and 8 s; the reset is on from 2 to 3 s, in the middle of the first call only
        "callers": {"count": 3, "arrival_rate": 0.25},
        "script": [
            {"wait_for_greeting": {"expect": "Hello, thanks for calling Acme Dental. How can I help you today?"}},
            {"say": "Hi, I would like to book a teeth cleaning.",
             "expect": ["Sure, I can book a cleaning.", "Which day works for you?"]},
            "hang_up",
        ],
        "faults": [{"name": "caller leg reset", "target": "caller_leg", "at": 2.0, "duration": 1.0,
                    "toxic": {"type": "reset_peer", "stream": "upstream", "attributes": {"timeout": 0}}}],
        "limits": {"duration": 90, "call_timeout": 30},
    }, "caller-leg")
    out = io.StringIO()
    result = await run_scenario(scenario, ROOT / "scenarios" / "demo.yaml", runs_dir=tmp_path / "runs", out=out)
    report = out.getvalue()
    calls = sorted(result.calls, key=lambda c: c.call_id)
    assert [str(c.outcome) for c in calls] == ["dropped", "completed", "completed"], report
    assert "dropped" in calls[0].reason and "script step" in calls[0].reason, calls[0].reason
    # the stream went through the caller leg's proxy, not straight to the runtime
    runtime_port = result.summary["dependencies"]["caller_leg"]["upstream"].rsplit(":", 1)[1]
    proxied_port = result.summary["dependencies"]["caller_leg"]["proxied_url"].rsplit(":", 1)[1]
    assert runtime_port != proxied_port
    fault = next(f for f in result.summary["faults"] if f.get("label") == "caller leg reset")
    assert fault["applied_at_s"] is not None and fault["error"] is None
