"""4-stack triage: each symptom the callers measure routes to its stack."""

from __future__ import annotations

import pytest

from reports.metrics import judge, targets_of
from reports.model import HARNESS, ORCHESTRATION, TELEPHONY, VOICE_CORE, WORKFLOW
from reports.runfolder import load_run
from reports.triage import triage
from tests.report_fixtures import call, turn, write_run


def _stacks(tmp_path, calls, **kwargs):
    data = load_run(write_run(tmp_path / "run", calls=calls, **kwargs))
    rows, _, _ = judge(data)
    return {s.stack: s for s in triage(data, rows, targets_of(data))}


def _ok_call(call_id, *turns, outcome="completed", reason=""):
    return call(call_id, float(call_id), 10.0, outcome, [turn(0, "greeting", float(call_id), 100.0), *turns],
                reason=reason)


@pytest.mark.parametrize(("case", "stack", "symptom"), [
    (lambda: call(0, 0.0, 0.1, "rejected", []), TELEPHONY, "call not answered"),
    (lambda: call(0, 0.0, 0.1, "failed_to_connect", []), TELEPHONY, "call not answered"),
    (lambda: _ok_call(0, outcome="dropped", reason="closed"), TELEPHONY, "dropped call"),
    (lambda: _ok_call(0, turn(1, "reply", 3.0, 300.0, heard=0, undecodable=2, status="garbled")), TELEPHONY,
     "garbled audio"),
    (lambda: _ok_call(0, turn(1, "reply", 3.0, 300.0, status="cut_off")), TELEPHONY, "agent audio cut off"),
    (lambda: _ok_call(0, turn(1, "reply", 3.0, None, heard=0, status="no_response"), outcome="timed_out"),
     VOICE_CORE, "no response"),
    (lambda: _ok_call(0, turn(1, "reply", 3.0, 400.0, gaps=[2000.0])), VOICE_CORE, "dead air"),
    (lambda: _ok_call(0, turn(1, "reply", 3.0, 1500.0)), VOICE_CORE, "high latency"),
    (lambda: _ok_call(0, turn(1, "reply", 3.0, 400.0, status="mismatch")), ORCHESTRATION,
     "wrong or missing objective"),
    (lambda: _ok_call(0, outcome="error", reason="harness bug"), HARNESS, "harness error"),
])
def test_each_symptom_routes_to_its_stack(tmp_path, case, stack, symptom):
    stacks = _stacks(tmp_path, [case()], runtime=False, faults=False, recordings=False)
    assert stacks[stack].symptoms.get(symptom, 0) >= 1, stacks[stack].symptoms
    routed = {name for name, s in stacks.items() if s.failures}
    # the symptom goes to its stack; a timed-out call also counts its own symptom in Voice Core
    assert routed == {stack}, routed
    example = stacks[stack].examples[0]
    assert example.call_id == 0 and example.event_line is not None


def test_healthy_call_routes_nothing(tmp_path):
    stacks = _stacks(tmp_path, [_ok_call(0, turn(1, "reply", 3.0, 500.0))], runtime=False, faults=False,
                     recordings=False)
    assert all(s.failures == 0 for s in stacks.values())


def test_workflow_failures_and_lost_recordings_go_to_workflow(tmp_path):
    stacks = _stacks(tmp_path, [_ok_call(0, turn(1, "reply", 3.0, 500.0))])
    workflow = stacks[WORKFLOW]
    assert workflow.symptoms == {"recording not stored": 1, "workflow event not delivered": 1}
    assert any("emission" in line for line in workflow.evidence)


def test_a_turn_counts_once_under_its_first_symptom(tmp_path):
    # garbled and slow: Telephony/Audio (the format is the first thing to fix), not also Voice Core
    stacks = _stacks(tmp_path, [_ok_call(0, turn(1, "reply", 3.0, 1500.0, heard=0, undecodable=1,
                                                 status="garbled"))], runtime=False, faults=False, recordings=False)
    assert stacks[TELEPHONY].failures == 1 and stacks[VOICE_CORE].failures == 0
