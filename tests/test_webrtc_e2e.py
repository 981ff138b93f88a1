"""WebRTC callers against the reference runtime, through the embedded stack (issue 7's end-to-end tests).

- One run deals its calls to a phone group and a WebRTC group: every call completes, every agent phrase decodes on
  both transports, and both groups end the same way turn by turn (same statuses, same phrases heard); the report
  shows both groups side by side and the WebRTC audio at its maximum.
- 5 % packet loss and 40 ms jitter on the WebRTC callers' leg, through the fault timeline: the audio-quality score
  drops measurably, the receivers count the lost packets, and the report routes the damage to Telephony/Audio.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from harness.run import run_scenario
from harness.scenario import scenario_from_mapping

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = [
    {"wait_for_greeting": {"expect": "Hello, thanks for calling Acme Dental. How can I help you today?"}},
    {"say": "Hi, I would like to book a teeth cleaning.",
     "expect": ["Sure, I can book a cleaning.", "Which day works for you?"]},
    {"say": "Tuesday morning would be great.", "expect": "Tuesday at ten is free. Shall I book it?"},
    {"say": "Yes, please.",
     "expect": ["You are booked for Tuesday at ten.", "Thanks for calling Acme Dental. Goodbye!"]},
    {"expect_hangup": {"timeout": 10}},
]

pytestmark = pytest.mark.e2e


def _scenario(name: str, **extra: Any) -> Any:
    return scenario_from_mapping({
        "name": name,
        "target": {"embedded": {"agent": "agents/dental.yaml", "capacity": 10}},
        "script": SCRIPT,
        "limits": {"duration": 120, "call_timeout": 60},
        **extra,
    }, name)


async def _run(scenario: Any, tmp_path: Path) -> tuple[Any, dict[str, Any], str]:
    out = io.StringIO()
    result = await run_scenario(scenario, ROOT / "scenarios" / "demo.yaml", runs_dir=tmp_path / "runs", out=out)
    return result, json.loads((result.run_dir / "summary.json").read_text()), out.getvalue()


def _row(summary: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(r for r in summary["targets"] if r["metric"] == metric)


async def test_the_same_scenario_over_both_transports_ends_the_same_way(tmp_path: Path) -> None:
    scenario = _scenario("both-transports", callers={"count": 4, "arrival_rate": 2, "groups": [
        {"name": "phone", "transport": "twilio"}, {"name": "browser", "transport": "webrtc"}]})
    result, summary, console = await _run(scenario, tmp_path)
    calls = sorted(result.calls, key=lambda c: c.call_id)
    assert [c.transport for c in calls] == ["twilio", "webrtc", "twilio", "webrtc"]
    assert all(str(c.outcome) == "completed" for c in calls), console

    def conversation(call: Any) -> list[tuple[str, list[str], int]]:
        return [(t.status, t.heard, t.undecodable) for t in call.turns]

    phone, browser = [conversation(c) for c in calls if c.transport == "twilio"], \
        [conversation(c) for c in calls if c.transport == "webrtc"]
    assert phone[0] == phone[1] == browser[0] == browser[1], (phone, browser)
    assert all(status == "ok" and not garbled for status, _, garbled in browser[0])
    assert sum(len(heard) for _, heard, _ in browser[0]) == 8  # every agent phrase of the dental agent, decoded
    groups = {g["group"]: g for g in summary["by_group"]}
    assert groups["browser"]["transport"] == "webrtc" and groups["phone"]["transport"] == "twilio"
    assert groups["browser"]["audio_quality"] == groups["phone"]["audio_quality"] == 1.0
    assert groups["browser"]["packet_loss_pct"] == 0.0 and groups["phone"]["packet_loss_pct"] is None
    assert _row(summary, "audio_quality")["measured"] == 1.0
    assert _row(summary, "packet_loss_pct")["verdict"] == "pass"
    # both sides name the WebRTC call the same way: the runtime stored its recording under the caller's record
    assert summary["recordings"]["missing"] == 0, summary["recordings"]
    html = (result.run_dir / "report.html").read_text()
    assert 'id="groups"' in html and 'data-group="browser"' in html


async def test_loss_and_jitter_on_the_webrtc_leg_degrade_audio_and_route_to_telephony(tmp_path: Path) -> None:
    scenario = _scenario("lossy-leg", callers={"count": 3, "arrival_rate": 1, "transport": "webrtc"},
                         faults=[{"name": "loss 5% jitter 40 ms", "target": "caller_leg", "at": 0,
                                  "impairment": {"loss_pct": 5, "delay_ms": 40, "jitter_ms": 40}}])
    _, summary, console = await _run(scenario, tmp_path)
    leg = summary["caller_leg_webrtc"]["far_end_to_caller"]
    assert leg["lost"] > 0 and leg["loss_pct"] > 1.0, leg
    # below its maximum (how far depends on where the losses fall: a lost 20 ms inside a 60 ms symbol may still
    # read clearly), and the phrases it damaged are garbled
    quality = _row(summary, "audio_quality")
    assert quality["measured"] is not None and quality["measured"] < 1.0, console
    assert quality["group"] == "audio quality"  # the Telephony/Audio stack's group of targets
    assert _row(summary, "phrase_decode_rate")["measured"] < 1.0
    loss = _row(summary, "packet_loss_pct")
    assert loss["measured"] > 1.0 and loss["verdict"] == "fail" and loss["group"] == "audio quality"
    telephony = next(t for t in summary["triage"] if t["stack"] == "Telephony/Audio")
    assert telephony["failures"] > 0, summary["triage"]
    assert set(telephony["symptoms"]) & {"garbled audio", "audio lost on the caller's leg"}, telephony["symptoms"]
    others = [t for t in summary["triage"] if t["stack"] in ("Orchestration", "Voice Core") and t["failures"]]
    assert not any("wrong or missing objective" in t["symptoms"] for t in others), others
    fault = next(f for f in summary["faults"] if f.get("label") == "loss 5% jitter 40 ms")
    assert fault["error"] is None
