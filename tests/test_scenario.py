"""Scenarios are validated whole, before anything runs; errors name the file, the field path and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.scenario import ExpectHangup, Say, ScenarioError, WaitForGreeting, load_scenario, scenario_from_mapping

ROOT = Path(__file__).resolve().parent.parent


SCENARIOS = sorted(p for p in (ROOT / "scenarios").glob("**/*.yaml") if "agents" not in p.parts)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_shipped_scenario_is_valid_and_its_agent_exists(path: Path) -> None:
    scenario = load_scenario(path)
    if scenario.target.embedded is not None:
        assert (path.parent / scenario.target.embedded.agent).is_file()


def test_the_demo_scenario() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "demo.yaml")
    assert scenario.target.embedded is not None
    assert isinstance(scenario.script[0], WaitForGreeting)
    assert isinstance(scenario.script[1], Say) and scenario.script[1].expect == [
        "Sure, I can book a cleaning.", "Which day works for you?"]
    assert isinstance(scenario.script[-1], ExpectHangup)


def test_short_forms_of_steps() -> None:
    scenario = scenario_from_mapping(
        {"name": "s", "script": ["wait_for_greeting", {"say": "hi", "expect": "hello"}, {"dtmf": "12#"},
                                 {"pause": 0.5}, "hang_up"]}, "s.yaml")
    kinds = [step.kind for step in scenario.script]
    assert kinds == ["wait_for_greeting", "say", "dtmf", "pause", "hang_up"]
    assert scenario.script[1].expect == ["hello"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "s", "script": [{"say": {"text": "a", "think_time": -1}}]},
         "s.yaml: script[0].say.think_time: Input should be greater than or equal to 0"),
        ({"name": "s", "script": ["hang_up"], "callers": {"count": 2, "rate": 3}}, "s.yaml: callers.rate: unknown key"),
        ({"name": "s", "script": [{"sing": "la"}]}, "s.yaml: script[0]: not a step"),
        ({"name": "s", "script": [{"say": {"text": "a", "wav": "b.wav"}}]}, "give exactly one of text or wav"),
        ({"name": "s", "script": [{"dtmf": "12x"}]}, "script[0].dtmf.digits"),
        ({"name": "s", "script": []}, "s.yaml: script: List should have at least 1 item"),
        ({"name": "s", "script": ["hang_up"], "target": {"webhook": {"url": "http://x"}, "embedded": {}}},
         "embedded answers every transport itself: give it alone"),
        ({"name": "s", "script": ["hang_up"], "target": {"webhook": {"url": "http://x"}, "websocket": {"url": "ws://x"}}},
         "choose one of webhook, websocket for the phone callers"),
        ({"name": "s", "script": ["hang_up"], "target": {"webrtc": {"url": "http://127.0.0.1:9/offer"}}},
         "callers.transport: twilio callers need target.webhook or target.websocket"),
        ({"name": "s", "script": [{"dtmf": "1"}, {"say": {"text": "a", "barge_in_after": 1}}]},
         "barge_in_after needs an agent turn right before it"),
        ({"name": "bad name", "script": ["hang_up"]}, "s.yaml: name: String should match pattern"),
    ],
)
def test_errors_name_the_file_the_field_and_the_reason(data: dict, expected: str) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario_from_mapping(data, "s.yaml")
    assert expected in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ScenarioError) as info:
        scenario_from_mapping({"name": "s", "script": [{"pause": -1}], "callers": {"count": 0}}, "s.yaml")
    assert len(info.value.problems) == 2


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nscript:\n  - say: [unclosed\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(path) in str(info.value) and "line" in str(info.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"target": "db", "down": True},
         "faults[0].target: unknown dependency 'db'; one of stt, tts, llm, crm, storage"),
        ({"target": "storage", "provider": {"kind": "error"}}, "faults[0]: 'storage' has no provider faults"),
        ({"target": "stt", "toxic": {"type": "latency", "attributes": {"latncy": 5}}},
         "faults[0].toxic: latency has no attribute 'latncy'; it has latency, jitter"),
        ({"target": "stt", "toxic": {"type": "earthquake"}}, "faults[0].toxic.type: unknown toxic type 'earthquake'"),
        ({"target": "stt", "toxic": {"type": "latency"}, "down": True},
         "faults[0]: a fault is exactly one of toxic, down, provider"),
        ({"target": "stt", "provider": {"kind": "flood"}}, "faults[0].provider.kind: unknown provider fault kind"),
        ({"target": "stt", "at": 999, "down": True}, "faults[0].at: 999 s is not within the run"),
        ({"target": "stt", "duration": 0, "down": True}, "faults[0].duration: Input should be greater than 0"),
    ],
)
def test_a_bad_fault_is_named_before_anything_starts(fault: dict, expected: str) -> None:
    with pytest.raises(ScenarioError) as error:
        scenario_from_mapping({"name": "x", "script": ["hang_up"], "faults": [fault]}, "chaos.yaml")
    assert f"chaos.yaml: {expected}" in str(error.value)


def test_faults_on_another_target_need_its_dependencies_named() -> None:
    with pytest.raises(ScenarioError, match=r"faults\[0\].target: 'stt' is not in chaos.dependencies"):
        scenario_from_mapping({"name": "x", "script": ["hang_up"], "target": {"websocket": {"url": "ws://127.0.0.1:1"}},
                               "faults": [{"target": "stt", "down": True}]}, "chaos.yaml")
    ok = scenario_from_mapping(
        {"name": "x", "script": ["hang_up"], "target": {"websocket": {"url": "ws://127.0.0.1:1"}},
         "chaos": {"toxiproxy_url": "http://127.0.0.1:8474", "dependencies": {"stt": {"proxy": "stt"}}},
         "faults": [{"target": "stt", "down": True}]}, "chaos.yaml")
    assert ok.chaos.dependencies["stt"].proxy == "stt"
    with pytest.raises(ScenarioError, match=r"faults\[0\].provider: chaos.dependencies.stt has no control_url"):
        scenario_from_mapping(
            {"name": "x", "script": ["hang_up"], "target": {"websocket": {"url": "ws://127.0.0.1:1"}},
             "chaos": {"dependencies": {"stt": {"proxy": "stt"}}},
             "faults": [{"target": "stt", "provider": {"kind": "error"}}]}, "chaos.yaml")
