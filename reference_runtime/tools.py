"""The :class:`ToolRunner` seam: tool calls the LLM makes (CRM lookup, calendar check, booking), and the
:class:`FillerPolicy` of safeguard 6.

Broken way (incident 6, the LiveKit pattern): the call runs the tool inside the turn and speaks after it: a
1.5-2 s tool is 1.5-2 s of silence on top of the LLM.

Fixed way (speculative execution, driven by the call): the tool runs as its own task while a short filler
("Let me check that for you.") is spoken through the normal TTS path. The filler starts at once when the tool is
*expected* to be slow (an EWMA of its past runs, seeded by its configured latency, at or over ``slow_tool_s``), or
after ``filler_after_s`` when a tool of unknown or short expected latency has not answered by then. A result
arriving within ``result_wait_s`` of the tool's start is used at once (the answer follows the filler); a later
one is kept in the dialog for the next turn's LLM request while the conversation carries on.

Contract: ``run`` always returns a :class:`ToolResult`; a failing tool becomes a JSON ``{"error": ...}``
result for the LLM to talk about, never an exception that ends the turn.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp

from reference_runtime.config import ToolsConfig
from reference_runtime.dialog import ToolCall, ToolResult
from reference_runtime.workflow import CallContext


class ToolRunner(Protocol):
    async def run(self, call: ToolCall, context: CallContext) -> ToolResult: ...


class StaticToolRunner:
    """Answers each tool with a configured canned result (``tools.static_results``), ``{"ok": true}``
    otherwise."""

    def __init__(self, results: dict[str, Any] | None = None) -> None:
        self._results = dict(results or {})
        self.calls: list[ToolCall] = []

    async def run(self, call: ToolCall, context: CallContext) -> ToolResult:
        self.calls.append(call)
        del self.calls[:-100]
        return ToolResult(call, json.dumps(self._results.get(call.name, {"ok": True})))


class HttpToolRunner:
    """POSTs ``{"tool", "arguments", "call_sid"}`` to the configured URL; the JSON reply is the result."""

    def __init__(self, url: str, session: aiohttp.ClientSession, *, timeout_s: float) -> None:
        self._url = url
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def run(self, call: ToolCall, context: CallContext) -> ToolResult:
        body = {"tool": call.name, "arguments": call.parsed_arguments(), "call_sid": context.call_sid}
        try:
            async with self._session.post(self._url, json=body, timeout=self._timeout) as response:
                text = await response.text()
                if response.status >= 300:
                    return ToolResult(
                        call, json.dumps({"error": f"HTTP {response.status}", "detail": text[:500]})
                    )
                json.loads(text)  # the LLM must get JSON back
                return ToolResult(call, text)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, UnicodeDecodeError) as error:
            return ToolResult(call, tool_error(f"{type(error).__name__}: {error}"))


# --- speculative execution (fixed mode) ---------------------------------------------------------------------


FillerTrigger = Literal["expected", "timer"]


@dataclass(frozen=True, slots=True)
class FillerPlan:
    """When to speak the filler while tools run: ``after_s`` seconds after they start (0 = at once), unless
    they have all answered by then."""

    after_s: float
    trigger: FillerTrigger


class FillerPolicy:
    """Decides when a tool round gets a filler, from each tool's expected latency (sans-I/O).

    Expected latency: an exponentially weighted moving average of the tool's observed latencies in this process
    (``alpha`` is the weight of the newest run), starting from the configured ``expected_latency_s[name]`` when
    there is one (an operator's prior: the calls that start before any run has finished, e.g. the first burst
    after a deploy, need it), else unknown until the first run ends. Learning is per process, shared by its
    calls: a tool of unknown latency is caught by the timer, and once it has shown itself slow the next calls get
    the filler at once; a tool configured slow that turns out fast stops getting one.
    """

    def __init__(
        self,
        *,
        expected_latency_s: Mapping[str, float] | None = None,
        slow_tool_s: float = 0.5,
        filler_after_s: float = 0.4,
        alpha: float = 0.3,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self._expected = dict(expected_latency_s or {})
        self.slow_tool_s = slow_tool_s
        self.filler_after_s = filler_after_s
        self.alpha = alpha

    @classmethod
    def from_config(cls, config: ToolsConfig) -> FillerPolicy:
        return cls(
            expected_latency_s=config.expected_latency_s,
            slow_tool_s=config.slow_tool_s,
            filler_after_s=config.filler_after_s,
            alpha=config.latency_ewma_alpha,
        )

    def expected(self, tool: str) -> float | None:
        """Seconds ``tool`` is expected to take, or None when nothing is known yet."""
        return self._expected.get(tool)

    def observe(self, tool: str, seconds: float) -> None:
        """A run of ``tool`` took ``seconds`` (feeds the moving average)."""
        previous = self._expected.get(tool)
        seconds = max(0.0, seconds)
        self._expected[tool] = seconds if previous is None else previous + self.alpha * (seconds - previous)

    def plan(self, tools: Iterable[str]) -> FillerPlan:
        """At once when any of the round's tools is expected to be slow, else on the timer."""
        for tool in tools:
            expected = self.expected(tool)
            if expected is not None and expected >= self.slow_tool_s:
                return FillerPlan(0.0, "expected")
        return FillerPlan(self.filler_after_s, "timer")


def tool_error(message: str) -> str:
    """The ToolRunner contract's failure result (what the LLM reads back)."""
    return json.dumps({"error": message})
