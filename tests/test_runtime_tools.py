"""Safeguard 6, tool calls (incident 6, the LiveKit pattern): broken = run the tool, then speak (silence for its
whole duration); fixed = a filler and the tool in parallel, the result spoken after the filler when it arrives in
time, else the conversation carries on and the late result is used next turn.

The turn tests drive one call of a real runtime on a manual clock (tests/test_runtime_tools_kit.py): the tool is
a gate the test opens, which moves the clock by the tool's latency, so times are exact on the runtime's own clock.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from harness.clock import ManualClock
from reference_runtime.config import ConfigError, DialogConfig, ObjectiveConfig
from reference_runtime.dialog import (
    LATE_RESULTS_NOTE,
    PENDING_RESULT,
    Dialog,
    LlmReply,
    ToolCall,
    ToolResult,
    TurnComplete,
)
from reference_runtime.tools import FillerPlan, FillerPolicy
from reference_runtime.workflow import CallContext
from tests.test_runtime_tools_kit import (
    STEP_TIMEOUT_S,
    CallDriver,
    Gate,
    GatedTools,
    ScriptedLlm,
    agent_config,
    call_of,
    crm_stack,
    listen_timed,
)

AGENT = "dental-tools"
FILLER = "Let me check that for you."
STILL_CHECKING = "I am still checking, one moment."
ANSWER = ["Sure, I can book a cleaning.", "Which day works for you?"]
#: the tool's latency: the incident's 1.5-2 s
TOOL_S = 1.5


def tool_config(mode: str, **tools: Any) -> Any:
    return agent_config(AGENT, safeguards={"tools": mode}, tools=tools)


async def first_tool_turn(driver: CallDriver, gate: Gate) -> tuple[int, float]:
    """The caller asks; the LLM calls ``lookup_customer``; returns (sentences heard before, turn start)."""
    greeted, started = len(driver.link.heard), driver.clock.now()
    driver.caller_says("I would like a cleaning.")
    await gate.wait_entered()
    return greeted, started


# --- broken: the silence ------------------------------------------------------------------------------------


async def test_broken_the_caller_hears_nothing_until_the_tool_is_done() -> None:
    clock = ManualClock()
    gate = Gate(clock, TOOL_S)
    async with call_of(tool_config("broken"), ScriptedLlm.of_agent(AGENT), clock=clock, tools=GatedTools(gate)) as d:
        greeted, started = await first_tool_turn(d, gate)
        gate.open()
        await d.turn_done()
        reply = d.link.heard[greeted:]
        assert [h.text for h in reply] == ANSWER  # no filler
        assert reply[0].at - started == pytest.approx(TOOL_S)  # first audio: after the whole tool
        assert d.sample("runtime_tool_turn_first_audio_seconds_sum") == pytest.approx(TOOL_S)
        assert d.sample("runtime_tool_fillers_total", trigger="expected") == 0
        assert d.sample("runtime_tool_seconds_sum", tool="lookup_customer") == pytest.approx(TOOL_S)


# --- fixed: the filler, then the result -----------------------------------------------------------------------


async def test_fixed_a_tool_known_to_be_slow_gets_the_filler_at_once_and_the_answer_after_it() -> None:
    clock = ManualClock()
    gate = Gate(clock, TOOL_S)
    config = tool_config("fixed", expected_latency_s={"lookup_customer": 1.8})
    async with call_of(config, ScriptedLlm.of_agent(AGENT), clock=clock, tools=GatedTools(gate)) as d:
        greeted, started = await first_tool_turn(d, gate)
        # the filler is spoken while the tool is still running (the gate is closed)
        heard = await d.link.wait_heard(greeted + 1)
        assert heard[greeted].text == FILLER and heard[greeted].at == started
        gate.open()
        await d.turn_done()
        reply = d.link.heard[greeted:]
        assert [h.text for h in reply] == [FILLER, *ANSWER]
        assert reply[1].at - started == pytest.approx(TOOL_S)  # the result is spoken as soon as it is in
        assert d.sample("runtime_tool_turn_first_audio_seconds_sum") == 0.0
        assert d.sample("runtime_tool_turn_first_audio_seconds_count") == 1
        assert d.sample("runtime_tool_fillers_total", trigger="expected") == 1
        assert d.sample("runtime_tool_results_late_total", tool="lookup_customer") == 0
        # what was said while the tool ran is part of the conversation the LLM sees next
        answered = d.llm.requests[-1].messages
        asking = next(m for m in answered if m.tool_calls)
        assert asking.content == FILLER
        assert answered[-1].role == "tool" and json.loads(answered[-1].content or "")["ok"] is True


async def test_fixed_an_unknown_tool_gets_the_filler_when_it_has_not_answered_in_time_and_is_learned() -> None:
    clock = ManualClock()
    gate = Gate(clock, TOOL_S)
    config = tool_config("fixed", filler_after_s=0.05)
    async with call_of(config, ScriptedLlm.of_agent(AGENT), clock=clock, tools=GatedTools(gate)) as d:
        assert d.runtime.filler_policy is not None
        assert d.runtime.filler_policy.expected("lookup_customer") is None
        greeted, _ = await first_tool_turn(d, gate)
        heard = await d.link.wait_heard(greeted + 1)  # the timer fired: the gate is still closed
        assert heard[greeted].text == FILLER
        gate.open()
        await d.turn_done()
        assert d.texts()[greeted:] == [FILLER, *ANSWER]
        assert d.sample("runtime_tool_fillers_total", trigger="timer") == 1
        # learned: the next call of this tool gets the filler at once
        assert d.runtime.filler_policy.expected("lookup_customer") == pytest.approx(TOOL_S)


async def test_fixed_a_fast_tool_gets_no_filler() -> None:
    clock = ManualClock()
    gate = Gate(clock, 0.1)
    gate.open()
    config = tool_config("fixed", filler_after_s=30, result_wait_s=60)  # the tool answers long before this
    async with call_of(config, ScriptedLlm.of_agent(AGENT), clock=clock, tools=GatedTools(gate)) as d:
        greeted = len(d.link.heard)
        await d.say_and_wait("I would like a cleaning.")
        assert d.texts()[greeted:] == ANSWER
        assert d.sample("runtime_tool_fillers_total", trigger="timer") == 0


async def test_fixed_a_late_result_lets_the_conversation_carry_on_and_is_used_next_turn() -> None:
    clock = ManualClock()
    gate = Gate(clock, TOOL_S)
    tools = GatedTools(gate)
    config = tool_config(
        "fixed", expected_latency_s={"lookup_customer": 1.8}, filler_after_s=0.01, result_wait_s=0.05
    )
    async with call_of(config, ScriptedLlm.of_agent(AGENT), clock=clock, tools=tools) as d:
        greeted, _ = await first_tool_turn(d, gate)
        await d.turn_done()  # over without the result: the gate is still closed
        assert d.texts()[greeted:] == [FILLER, STILL_CHECKING]
        assert d.call.dialog.objective is not None and d.call.dialog.objective.name == "ask"

        gate.open()
        await late_results_settled(d)
        assert d.sample("runtime_tool_results_late_total", tool="lookup_customer") == 1

        # the next turn: the LLM has the result (no second tool call) and the objective is answered
        heard = len(d.link.heard)
        await d.say_and_wait("Hello?")
        assert d.texts()[heard:] == ANSWER
        assert len(tools.calls) == 1
        request = d.llm.requests[-1]
        assert LATE_RESULTS_NOTE.format(names="lookup_customer") in (request.messages[0].content or "")
        results = [m for m in request.messages if m.role == "tool"]
        assert [json.loads(m.content or "") for m in results] == [{"tool": "lookup_customer", "ok": True}]
        assert d.call.dialog.objective is not None and d.call.dialog.objective.name == "confirm"

        # announced once: the turn after does not hear of it again
        await d.say_and_wait("Tuesday morning would be great.")
        assert "arrived after your last reply" not in (d.llm.requests[-1].messages[0].content or "")


async def late_results_settled(driver: CallDriver) -> None:
    """Wait for the tools the call carried on without (their results handed to the dialog)."""
    async with asyncio.timeout(STEP_TIMEOUT_S):
        await asyncio.gather(*driver.call._late_tools)


async def test_fixed_a_tool_runner_that_raises_becomes_an_error_result_and_the_turn_goes_on() -> None:
    class Exploding:
        async def run(self, call: ToolCall, context: CallContext) -> ToolResult:
            raise RuntimeError("CRM client bug")

    clock = ManualClock()
    async with call_of(tool_config("fixed"), ScriptedLlm.of_agent(AGENT), clock=clock, tools=Exploding()) as d:
        greeted = len(d.link.heard)
        await d.say_and_wait("I would like a cleaning.")
        assert d.texts()[greeted:] == ANSWER
        assert d.sample("runtime_tool_calls_total", tool="lookup_customer", outcome="error") == 1
        tool_message = d.llm.requests[-1].messages[-1]
        assert tool_message.role == "tool" and "CRM client bug" in (tool_message.content or "")


async def test_fixed_the_caller_speaking_again_cancels_the_running_tool() -> None:
    class Cancellable(GatedTools):
        cancelled = 0

        async def run(self, call: ToolCall, context: CallContext) -> ToolResult:
            try:
                return await super().run(call, context)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise

    clock = ManualClock()
    tools = Cancellable(Gate(clock, TOOL_S))
    config = tool_config("fixed", expected_latency_s={"lookup_customer": 1.8})
    async with call_of(config, ScriptedLlm.of_agent(AGENT), clock=clock, tools=tools) as d:
        greeted, _ = await first_tool_turn(d, tools.gate)
        await d.link.wait_heard(greeted + 1)  # the filler
        tools.gate = Gate(clock, TOOL_S)
        tools.gate.open()
        await d.say_and_wait("Sorry, I meant a filling.")
        assert tools.cancelled == 1
        assert d.texts()[-2:] == ANSWER


# --- the policy and the dialog (sans-I/O) ---------------------------------------------------------------------


def test_filler_policy_the_configured_latency_then_the_moving_average_of_runs_then_the_timer() -> None:
    policy = FillerPolicy(expected_latency_s={"crm": 2.0}, slow_tool_s=0.5, filler_after_s=0.4, alpha=0.5)
    assert policy.plan(["calendar"]) == FillerPlan(0.4, "timer")  # nothing known
    assert policy.plan(["calendar", "crm"]) == FillerPlan(0.0, "expected")  # the operator's prior
    policy.observe("calendar", 1.0)
    assert policy.expected("calendar") == 1.0  # the first run is the estimate
    assert policy.plan(["calendar"]) == FillerPlan(0.0, "expected")
    policy.observe("calendar", 0.0)  # the moving average: half-way with alpha 0.5
    assert policy.expected("calendar") == 0.5
    policy.observe("calendar", 0.0)
    assert policy.plan(["calendar"]) == FillerPlan(0.4, "timer")
    for _ in range(3):  # configured slow, seen fast: it stops getting the filler at once
        policy.observe("crm", 0.1)
    assert policy.expected("crm") == pytest.approx(0.1 + 1.9 / 8)
    assert policy.plan(["crm", "calendar"]) == FillerPlan(0.4, "timer")
    with pytest.raises(ValueError):
        FillerPolicy(alpha=0)


def test_tools_config_defaults_and_the_filler_comes_before_giving_up() -> None:
    tools = agent_config(AGENT).tools
    assert (tools.filler, tools.still_checking) == (FILLER, STILL_CHECKING)
    assert (tools.slow_tool_s, tools.filler_after_s, tools.result_wait_s) == (0.5, 0.4, 3.0)
    with pytest.raises(ConfigError, match="tools: Value error, result_wait_s must be longer than filler_after_s"):
        agent_config(AGENT, tools={"filler_after_s": 1.0, "result_wait_s": 1.0})


def dialog_with_tool() -> tuple[Dialog, ToolCall]:
    objectives = [
        ObjectiveConfig(name="check", instruction="Check the calendar.", tool="check_calendar", next="book"),
        ObjectiveConfig(name="book", instruction="Book it.", next=None),
    ]
    dialog = Dialog(DialogConfig(objectives=objectives))
    dialog.greeting()
    dialog.caller_turn("Is Tuesday free?")
    call = ToolCall("call_1", "check_calendar", '{"day": "Tuesday"}')
    dialog.reply_received(LlmReply("", (call,)))
    return dialog, call


def test_dialog_the_filler_is_the_content_of_the_reply_that_asked_for_the_tool() -> None:
    dialog, call = dialog_with_tool()
    dialog.filler_spoken(FILLER)
    request = dialog.tool_results([ToolResult(call, '{"slots": ["10:00"]}')])
    asking, result = request.messages[-2:]
    assert (asking.role, asking.content, asking.tool_calls) == ("assistant", FILLER, (call,))
    assert result.role == "tool" and result.tool_call_id == "call_1"
    assert ("agent", FILLER) in [(e.kind, e.text) for e in dialog.log]


def test_dialog_a_deferred_tool_keeps_a_placeholder_then_its_late_result_is_announced_once() -> None:
    dialog, call = dialog_with_tool()
    assert dialog.tools_deferred([], [call], STILL_CHECKING) == TurnComplete(goodbye=None)
    assert dialog.objective is not None and dialog.objective.name == "check"  # not answered: asked again
    assert not dialog.in_turn
    tool, said = dialog.history[-2:]
    assert (tool.role, tool.content, tool.tool_call_id) == ("tool", PENDING_RESULT, "call_1")
    assert (said.role, said.content) == ("assistant", STILL_CHECKING)

    assert dialog.late_tool_result(ToolResult(call, '{"slots": ["10:00"]}'))
    assert not dialog.late_tool_result(ToolResult(call, "{}"))  # only once
    assert [m.content for m in dialog.history if m.role == "tool"] == ['{"slots": ["10:00"]}']

    note = LATE_RESULTS_NOTE.format(names="check_calendar")
    plan = dialog.caller_turn("Hello?")
    assert note in (plan.request.messages[0].content or "")
    assert dialog.reply_received(LlmReply("Tuesday at ten is free.")) == TurnComplete(goodbye=None)
    assert dialog.objective is not None and dialog.objective.name == "book"
    plan = dialog.caller_turn("Yes.")
    assert note not in (plan.request.messages[0].content or "")


def test_dialog_a_late_result_of_an_unknown_call_is_ignored() -> None:
    dialog, call = dialog_with_tool()
    dialog.tool_results([ToolResult(call, "{}")])  # answered in time: nothing pending
    assert not dialog.late_tool_result(ToolResult(call, "{}"))


# --- end to end: the fake CRM behind HTTP, through create_app ---------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["broken", "fixed"])
async def test_end_to_end_slow_crm_tool_filler_first_when_fixed_silence_when_broken(mode: str) -> None:
    latency = 2.0
    tools = {"expected_latency_s": {"lookup_customer": latency}}
    async with crm_stack(AGENT, safeguards={"tools": mode}, crm={"tool_latency": latency}, tools=tools) as s:
        caller = await s.dial()
        await listen_timed(caller, sentences=2)  # the greeting
        await caller.say("I would like a cleaning.")
        heard = await listen_timed(caller, sentences=3 if mode == "fixed" else 2)
        answered = s.crm_answered("tools")
        await caller.hang_up()
        await s.idle()
    texts = [text for _, text in heard]
    assert len(answered) == 1
    if mode == "broken":
        assert texts == ANSWER
        assert heard[0][0] > answered[0]  # nothing before the CRM had answered
    else:
        assert texts == [FILLER, *ANSWER]
        assert heard[0][0] < answered[0] < heard[1][0]  # the filler while the CRM worked, the answer after
