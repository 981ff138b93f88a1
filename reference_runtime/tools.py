"""The :class:`ToolRunner` seam: tool calls the LLM makes (CRM lookup, calendar check, booking).

Today the call runs the tool inside the turn and speaks after it (incident 6, the broken way: a slow tool adds
its whole latency to the response). The safeguards issue adds speculative execution (a filler track in
parallel) around this same interface.

Contract: ``run`` always returns a :class:`ToolResult`; a failing tool becomes a JSON ``{"error": ...}``
result for the LLM to talk about, never an exception that ends the turn.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import aiohttp

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
            return ToolResult(call, json.dumps({"error": f"{type(error).__name__}: {error}"}))
