"""Anthropic Messages, streamed (``POST /v1/messages``, ``stream: true``): the LLM of another API family than
OpenAI, the runtime's LLM fallback (safeguard 4). Wire facts: fake_providers/anthropic_messages.py.

aiohttp and the SSE decoder of :mod:`~reference_runtime.providers.openai_llm` rather than the ``anthropic`` SDK,
for the reasons given there (no hidden retries under the breaker, instant cancel on barge-in). The sans-I/O part
is :func:`request_body` (the runtime's OpenAI-shaped chat -> Anthropic's system + alternating messages with
``tool_use`` / ``tool_result`` blocks) and :class:`MessageAccumulator` (stream events -> text deltas and the
reply). "Time to first token" runs from sending the request to the first text delta or tool-use block.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from harness.clock import Clock
from reference_runtime.config import AnthropicLlmConfig
from reference_runtime.dialog import ChatMessage, LlmReply, LlmRequest, ToolCall
from reference_runtime.providers.base import LlmChunk, ProviderError, ProviderObserver, ReplyDone, TextDelta
from reference_runtime.providers.openai_llm import SseDecoder


def messages_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"


def _blocks(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id or "", "content": message.content or ""}]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.parsed_arguments()})
    return blocks


def to_anthropic(messages: tuple[ChatMessage, ...]) -> tuple[str, list[dict[str, Any]]]:
    """(system text, messages): system messages lift into ``system``; tool results are user turns of
    ``tool_result`` blocks; consecutive turns of one role merge, as the Messages API wants them alternating."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role in ("system", "developer"):
            system.append(message.content or "")
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    if not out or out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": [{"type": "text", "text": "(the call has started)"}]})
    return "\n\n".join(s for s in system if s), out


def request_body(config: AnthropicLlmConfig, request: LlmRequest) -> dict[str, Any]:
    system, messages = to_anthropic(request.messages)
    body: dict[str, Any] = {
        "model": config.model,
        "max_tokens": config.max_tokens,
        "messages": messages,
        "stream": True,
    }
    if system:
        body["system"] = system
    if config.temperature is not None:
        body["temperature"] = config.temperature
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
        ]
    return body


class MessageAccumulator:
    """Streaming events (``content_block_start``, ``content_block_delta``, ``message_delta``...) -> text deltas,
    and at ``message_stop`` the whole reply with its tool calls (tool input arrives as ``partial_json`` pieces)."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._tools: dict[int, dict[str, str]] = {}
        self.stop_reason: str | None = None
        self.stopped = False

    def feed(self, event: dict[str, Any]) -> tuple[str, bool]:
        """Returns (the text delta, whether this event carried content: text or a tool call)."""
        kind = event.get("type")
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._tools[int(event.get("index", 0))] = {
                    "id": str(block.get("id") or ""),
                    "name": str(block.get("name") or ""),
                    "arguments": "",
                }
                return "", True
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                text = str(delta.get("text") or "")
                self._text.append(text)
                return text, bool(text)
            if delta.get("type") == "input_json_delta":
                tool = self._tools.get(int(event.get("index", 0)))
                if tool is not None:
                    tool["arguments"] += str(delta.get("partial_json") or "")
        elif kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
        elif kind == "message_stop":
            self.stopped = True
        return "", False

    def reply(self) -> LlmReply:
        calls = tuple(
            ToolCall(id=t["id"] or f"toolu_{i}", name=t["name"], arguments=t["arguments"] or "{}")
            for i, t in sorted(self._tools.items())
            if t["name"]
        )
        return LlmReply("".join(self._text).strip(), calls)


class AnthropicLanguageModel:
    def __init__(
        self,
        config: AnthropicLlmConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Clock,
        observer: ProviderObserver,
    ) -> None:
        self.name = "anthropic"
        self._config = config
        self._session = session
        self._clock = clock
        self._observer = observer

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._config.timeout_s, sock_read=self._config.timeout_s
        )
        headers = {
            "x-api-key": self._config.api_key,
            "anthropic-version": self._config.anthropic_version,
            "accept": "text/event-stream",
        }
        started = self._clock.now()
        first = True
        try:
            async with self._session.post(
                messages_url(self._config.base_url),
                json=request_body(self._config, request),
                headers=headers,
                timeout=timeout,
            ) as response:
                if response.status != 200:
                    body = (await response.content.read(2000)).decode("utf-8", "replace")
                    self._observer.count_error("llm", self.name, f"http_{response.status}")
                    raise ProviderError("llm", self.name, f"HTTP {response.status}: {body}", status=response.status)
                decoder, accumulator = SseDecoder(), MessageAccumulator()
                async for data in response.content.iter_any():
                    for event in decoder.feed(data):
                        payload = json.loads(event.data)
                        if event.event == "error" or payload.get("type") == "error":
                            self._observer.count_error("llm", self.name, "stream_error")
                            raise ProviderError("llm", self.name, f"error event: {event.data}")
                        text, carried = accumulator.feed(payload)
                        if carried and first:
                            first = False
                            self._observer.observe_latency("llm", self.name, self._clock.now() - started)
                        if text:
                            yield TextDelta(text)
                    if accumulator.stopped:
                        break
                if not accumulator.stopped:
                    self._observer.count_error("llm", self.name, "truncated")
                    raise ProviderError("llm", self.name, "stream ended before message_stop")
                yield ReplyDone(accumulator.reply())
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
            reason = "timeout" if isinstance(error, TimeoutError) else "transport"
            self._observer.count_error("llm", self.name, reason)
            raise ProviderError("llm", self.name, f"{reason}: {error!r}") from error
