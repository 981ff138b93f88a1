"""The conversation as an objective graph, sans-I/O.

A dialog is a greeting, a chain of objectives and a goodbye (``DialogConfig``). The greeting is spoken when
the stream starts, without the LLM. Each caller turn is answered under the *current* objective: the system
prompt carries the marker ``Objective: <name>. <instruction>`` (the fake LLM's scripted rules match on it),
the messages carry the conversation so far. When the reply is complete the graph moves to ``next``; after the
last objective the dialog is finished and the goodbye is spoken, then the call hangs up.

The dialog never calls anything: it answers each input with the next step for the call to perform
(:class:`LlmRequest` to send, :class:`RunTools` to run, :class:`TurnComplete`), and the call feeds results
back. A turn interrupted by the caller (barge-in) does not advance the graph: the objective is asked again
next turn.

Slow tools (safeguard 6): what the agent says while tools run (the filler) is recorded as the content of the
assistant message that asked for them (OpenAI's format wants the ``tool`` messages right after it). A turn may
carry on without a tool's result (:meth:`Dialog.tools_deferred`): the tool's message then holds a "pending"
placeholder, the objective stays, and when the result arrives (:meth:`Dialog.late_tool_result`) it replaces the
placeholder and the next LLM request's system prompt says so, until a reply that could use it completes a turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from reference_runtime.config import DialogConfig, ObjectiveConfig

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """the arguments as the LLM wrote them (a JSON text, possibly invalid: the tool runner decides)"""

    def parsed_arguments(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class ToolResult:
    call: ToolCall
    content: str
    """what the LLM reads back in the ``tool`` message (JSON text)"""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}, "additionalProperties": True}
    )


@dataclass(frozen=True, slots=True)
class LlmRequest:
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class LlmReply:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkflowEvent:
    """Something the business side must learn (a booking, a CRM update); delivered by the WorkflowClient
    seam."""

    name: str
    objective: str
    data: dict[str, str]


@dataclass(frozen=True, slots=True)
class CallerTurnPlan:
    request: LlmRequest
    events: tuple[WorkflowEvent, ...]


@dataclass(frozen=True, slots=True)
class RunTools:
    calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True)
class TurnComplete:
    goodbye: str | None
    """set when this turn finished the last objective: speak it, wait for playout, hang up"""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of the dialog's own record (what was said, pressed, called, emitted), kept with the
    recording."""

    kind: Literal["agent", "caller", "dtmf", "tool", "event", "interrupted", "objective"]
    text: str


#: what the LLM reads in a tool's message while its result has not arrived (the turn went on without it)
PENDING_RESULT = json.dumps({"status": "pending", "note": "the result has not arrived yet"})
#: the system prompt's line when tool results arrived after the turn that asked for them had moved on
LATE_RESULTS_NOTE = "Tool results that arrived after your last reply (now in the conversation): {names}."


class DialogFinished(RuntimeError):
    """The graph has ended; no more caller turns are answered."""


class Dialog:
    def __init__(self, config: DialogConfig) -> None:
        self.config = config
        self._objectives = {o.name: o for o in config.objectives}
        self.objective: ObjectiveConfig | None = config.objectives[0]
        self.history: list[ChatMessage] = []
        self.log: list[LogEntry] = []
        self._pending_dtmf: list[str] = []
        self._turn_dtmf: tuple[str, ...] = ()
        self._turn_start: int | None = None
        self._tool_rounds = 0
        #: tool calls whose turn carried on without their result: id -> call
        self._pending_tools: dict[str, ToolCall] = {}
        #: names of tools whose results arrived late, announced in the system prompt until a turn completes
        self._late_results: list[str] = []
        self._late_announced = 0

    @property
    def finished(self) -> bool:
        return self.objective is None

    @property
    def in_turn(self) -> bool:
        return self._turn_start is not None

    def greeting(self) -> str:
        """Spoken when the stream starts; it is part of the conversation the LLM sees."""
        self.history.append(ChatMessage("assistant", self.config.greeting))
        self.log.append(LogEntry("agent", self.config.greeting))
        return self.config.greeting

    def dtmf(self, digit: str) -> None:
        """Keys are logged and shown to the LLM on the next turn (in the system prompt, after the
        objective)."""
        self._pending_dtmf.append(digit)
        self.log.append(LogEntry("dtmf", digit))

    def caller_turn(self, text: str) -> CallerTurnPlan:
        if self.objective is None:
            raise DialogFinished("the dialog has ended")
        if self._turn_start is not None:
            self.turn_interrupted("")
        self.history.append(ChatMessage("user", text))
        self.log.append(LogEntry("caller", text))
        self._turn_start = len(self.history)
        self._tool_rounds = 0
        self._turn_dtmf, self._pending_dtmf = tuple(self._pending_dtmf), []
        objective = self.objective
        events = ()
        if objective.event:
            events = (WorkflowEvent(objective.event, objective.name, {"caller_said": text}),)
            self.log.append(LogEntry("event", objective.event))
        return CallerTurnPlan(self._request(), events)

    def reply_received(self, reply: LlmReply) -> RunTools | TurnComplete:
        """The LLM finished streaming. Tool calls (within ``max_tool_rounds``) must run before the turn goes
        on."""
        if self.objective is None or self._turn_start is None:
            raise RuntimeError("no turn in progress")
        if reply.tool_calls and self._tool_rounds < self.config.max_tool_rounds:
            self._tool_rounds += 1
            self.history.append(ChatMessage("assistant", reply.text or None, tool_calls=reply.tool_calls))
            for call in reply.tool_calls:
                self.log.append(LogEntry("tool", f"{call.name}({call.arguments})"))
            return RunTools(reply.tool_calls)
        if reply.text:
            self.history.append(ChatMessage("assistant", reply.text))
            self.log.append(LogEntry("agent", reply.text))
        self._turn_start = None
        # the LLM has answered with the late results in front of it: stop announcing those
        del self._late_results[: self._late_announced]
        self._late_announced = 0
        self.objective = self._objectives.get(self.objective.next) if self.objective.next else None
        if self.objective is not None:
            self.log.append(LogEntry("objective", self.objective.name))
            return TurnComplete(goodbye=None)
        self.history.append(ChatMessage("assistant", self.config.goodbye))
        self.log.append(LogEntry("agent", self.config.goodbye))
        return TurnComplete(goodbye=self.config.goodbye)

    def tool_results(self, results: list[ToolResult]) -> LlmRequest:
        """Feed the tools' results back (role ``tool``) and ask the LLM again under the same objective."""
        if self._turn_start is None:
            raise RuntimeError("no turn in progress")
        for result in results:
            self.history.append(ChatMessage("tool", result.content, tool_call_id=result.call.id))
        return self._request()

    def filler_spoken(self, text: str) -> None:
        """``text`` is being said while the tools of the last reply run: it becomes that reply's content."""
        if self._turn_start is None:
            raise RuntimeError("no turn in progress")
        last = self.history[-1]
        if last.role != "assistant" or not last.tool_calls:
            raise RuntimeError("a filler belongs to a reply that asked for tools")
        content = f"{last.content} {text}" if last.content else text
        self.history[-1] = ChatMessage("assistant", content, tool_calls=last.tool_calls)
        self.log.append(LogEntry("agent", text))

    def tools_deferred(self, results: list[ToolResult], pending: list[ToolCall], said: str) -> TurnComplete:
        """The turn carries on without the ``pending`` tools' results (they are slow): the results in hand
        and a placeholder for each pending one go into the conversation, then ``said`` (what the agent says
        instead). The objective does not advance: it was not answered."""
        if self._turn_start is None:
            raise RuntimeError("no turn in progress")
        for result in results:
            self.history.append(ChatMessage("tool", result.content, tool_call_id=result.call.id))
        for call in pending:
            self.history.append(ChatMessage("tool", PENDING_RESULT, tool_call_id=call.id))
            self._pending_tools[call.id] = call
            self.log.append(LogEntry("tool", f"{call.name}: result pending"))
        if said:
            self.history.append(ChatMessage("assistant", said))
            self.log.append(LogEntry("agent", said))
        self._turn_start = None
        return TurnComplete(goodbye=None)

    def late_tool_result(self, result: ToolResult) -> bool:
        """A deferred tool's result arrived: it replaces its placeholder and is announced to the LLM from the
        next request on. ``False`` when the call was not pending (already answered, or dropped with an
        interrupted turn)."""
        call = self._pending_tools.pop(result.call.id, None)
        if call is None:
            return False
        for index in range(len(self.history) - 1, -1, -1):
            message = self.history[index]
            if message.role == "tool" and message.tool_call_id == call.id:
                self.history[index] = ChatMessage("tool", result.content, tool_call_id=call.id)
                break
        else:
            return False
        self._late_results.append(call.name)
        self.log.append(LogEntry("tool", f"{call.name}: result arrived late"))
        return True

    def turn_interrupted(self, spoken: str) -> None:
        """The caller barged in (or spoke again) before the reply was complete: drop the half-done tool
        exchange, keep what was already said aloud, stay on the same objective."""
        if self._turn_start is None:
            return
        del self.history[self._turn_start :]
        if spoken:
            self.history.append(ChatMessage("assistant", spoken))
        self.log.append(LogEntry("interrupted", spoken))
        self._turn_start = None

    def _request(self) -> LlmRequest:
        assert self.objective is not None
        system = (
            f"{self.config.system_prompt}\n\nObjective: {self.objective.name}. {self.objective.instruction}"
        )
        if self._turn_dtmf:
            system += f"\nKeys the caller pressed: {' '.join(self._turn_dtmf)}"
        if self._late_results:
            system += "\n" + LATE_RESULTS_NOTE.format(names=", ".join(dict.fromkeys(self._late_results)))
            self._late_announced = len(self._late_results)
        tools = ()
        if self.objective.tool:
            tools = (
                ToolSpec(self.objective.tool, f"Run the {self.objective.tool!r} tool for this objective."),
            )
        return LlmRequest((ChatMessage("system", system), *self.history), tools)
