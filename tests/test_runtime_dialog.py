"""The objective graph (reference_runtime.dialog): prompts, advancing, tools, interruption, goodbye."""

from __future__ import annotations

import pytest

from reference_runtime.config import DialogConfig, ObjectiveConfig
from reference_runtime.dialog import (
    Dialog,
    DialogFinished,
    LlmReply,
    RunTools,
    ToolCall,
    ToolResult,
    TurnComplete,
)


def booking_dialog(**overrides) -> Dialog:
    config = DialogConfig(
        greeting="Hi, this is the clinic.",
        system_prompt="You book appointments.",
        objectives=[
            ObjectiveConfig(name="ask", instruction="Ask which day suits the caller.", next="confirm"),
            ObjectiveConfig(name="confirm", instruction="Confirm the day.", next="book"),
            ObjectiveConfig(
                name="book",
                instruction="Book it.",
                next=None,
                tool="book_appointment",
                event="appointment_booked",
            ),
        ],
        goodbye="Goodbye!",
        **overrides,
    )
    return Dialog(config)


def system_of(dialog_request) -> str:
    assert dialog_request.messages[0].role == "system"
    return dialog_request.messages[0].content


def test_greeting_is_part_of_the_conversation() -> None:
    dialog = booking_dialog()
    assert dialog.greeting() == "Hi, this is the clinic."
    plan = dialog.caller_turn("I need an appointment")
    roles = [(m.role, m.content) for m in plan.request.messages[1:]]
    assert roles == [("assistant", "Hi, this is the clinic."), ("user", "I need an appointment")]


def test_system_prompt_carries_the_objective_marker_and_the_graph_advances() -> None:
    dialog = booking_dialog()
    dialog.greeting()
    plan = dialog.caller_turn("I need an appointment")
    assert "Objective: ask. Ask which day suits the caller." in system_of(plan.request)
    assert system_of(plan.request).startswith("You book appointments.")
    assert plan.request.tools == ()
    assert dialog.reply_received(LlmReply("Which day?")) == TurnComplete(goodbye=None)
    assert dialog.objective is not None and dialog.objective.name == "confirm"

    plan = dialog.caller_turn("Tuesday")
    assert "Objective: confirm. Confirm the day." in system_of(plan.request)
    # the conversation so far, in order
    assert [m.content for m in plan.request.messages[1:]] == [
        "Hi, this is the clinic.",
        "I need an appointment",
        "Which day?",
        "Tuesday",
    ]


def test_tool_call_runs_then_llm_is_asked_again_with_the_result() -> None:
    dialog = booking_dialog()
    dialog.greeting()
    for said, reply in (("hello", "Which day?"), ("Tuesday", "Tuesday, shall I book?")):
        dialog.caller_turn(said)
        dialog.reply_received(LlmReply(reply))
    plan = dialog.caller_turn("yes please")
    assert [e.name for e in plan.events] == ["appointment_booked"]
    assert [t.name for t in plan.request.tools] == ["book_appointment"]

    call = ToolCall(id="call_1", name="book_appointment", arguments='{"day": "tuesday"}')
    step = dialog.reply_received(LlmReply("", (call,)))
    assert step == RunTools((call,))
    request = dialog.tool_results([ToolResult(call, '{"booked": true}')])
    assistant, tool = request.messages[-2:]
    assert assistant.role == "assistant" and assistant.tool_calls == (call,)
    assert tool.role == "tool" and tool.tool_call_id == "call_1" and tool.content == '{"booked": true}'
    assert "Objective: book." in system_of(request)

    step = dialog.reply_received(LlmReply("You are booked for Tuesday."))
    assert step == TurnComplete(goodbye="Goodbye!")
    assert dialog.finished
    with pytest.raises(DialogFinished):
        dialog.caller_turn("one more thing")


def test_tool_rounds_are_bounded() -> None:
    dialog = booking_dialog(max_tool_rounds=1)
    dialog.objective = dialog.config.objectives[2]
    dialog.caller_turn("book it")
    call = ToolCall(id="c", name="book_appointment", arguments="{}")
    assert isinstance(dialog.reply_received(LlmReply("", (call,))), RunTools)
    dialog.tool_results([ToolResult(call, "{}")])
    # a second round of tool calls is not run: the turn completes with whatever text there is
    assert dialog.reply_received(LlmReply("Done.", (call,))) == TurnComplete(goodbye="Goodbye!")


def test_interrupted_turn_keeps_the_objective_and_drops_the_half_done_tool_exchange() -> None:
    dialog = booking_dialog()
    dialog.objective = dialog.config.objectives[2]
    dialog.caller_turn("book it")
    call = ToolCall(id="c", name="book_appointment", arguments="{}")
    dialog.reply_received(LlmReply("", (call,)))
    dialog.turn_interrupted("Let me")
    assert dialog.objective.name == "book"
    assert not dialog.in_turn
    assert [(m.role, m.content) for m in dialog.history] == [("user", "book it"), ("assistant", "Let me")]
    # the next turn is asked under the same objective
    plan = dialog.caller_turn("sorry, go on")
    assert "Objective: book." in system_of(plan.request)


def test_dtmf_is_logged_and_shown_to_the_next_turn() -> None:
    dialog = booking_dialog()
    dialog.greeting()
    dialog.dtmf("4")
    dialog.dtmf("2")
    plan = dialog.caller_turn("I pressed some keys")
    assert "Keys the caller pressed: 4 2" in system_of(plan.request)
    assert [(e.kind, e.text) for e in dialog.log if e.kind == "dtmf"] == [("dtmf", "4"), ("dtmf", "2")]
    dialog.reply_received(LlmReply("Noted."))
    plan = dialog.caller_turn("next")
    assert "Keys the caller pressed" not in system_of(plan.request)
