"""OpenAI chat completions, streamed (``POST /v1/chat/completions``, ``stream: true``; providers.md "OpenAI").

Why aiohttp and a hand-written SSE parser rather than the ``openai`` SDK:

- the SDK retries 408/409/429/5xx itself (twice, backing off up to 8 s). Retrying is a policy the safeguards
  issue owns (circuit breaker, fallback to another provider); hidden retries would turn a rate limit into
  seconds of dead air that neither the breaker nor the metrics see;
- cancelling a turn on barge-in must drop the HTTP stream at once; with one aiohttp session for every provider
  that is the same, well-understood mechanism everywhere;
- the SSE decoding is then a sans-I/O core (:class:`SseDecoder`, :class:`ReplyAccumulator`) tested with
  literal bytes.

"Time to first token" is measured from sending the request to the first content or tool-call delta.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from harness.clock import Clock
from reference_runtime.config import OpenAILlmConfig
from reference_runtime.dialog import ChatMessage, LlmReply, LlmRequest, ToolCall
from reference_runtime.providers.base import LlmChunk, ProviderError, ProviderObserver, ReplyDone, TextDelta


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str


class SseDecoder:
    """Server-sent events (WHATWG HTML, "Parsing an event stream"): bytes in, complete events out."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[SseEvent]:
        self._buffer += data
        events: list[SseEvent] = []
        while True:
            cut = min((i for i in (self._buffer.find(b"\n"), self._buffer.find(b"\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            line = self._buffer[:cut].decode("utf-8")
            skip = 2 if self._buffer[cut : cut + 2] == b"\r\n" else 1
            if self._buffer[cut : cut + 1] == b"\r" and cut + 1 == len(self._buffer):
                break  # a lone CR at the end may be the first half of CRLF: wait for more bytes
            self._buffer = self._buffer[cut + skip :]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SseEvent | None:
        if line == "":
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


class ReplyAccumulator:
    """Chunks of ``chat.completion.chunk`` -> text deltas, and at the end the whole reply with its tool calls.
    Tool calls are keyed by ``index``: the first chunk of a call carries ``id`` and ``function.name``, later
    chunks append to ``function.arguments``."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None

    def feed(self, chunk: dict[str, Any]) -> tuple[str, bool]:
        """Returns (the text delta, whether this chunk carried anything: text or a tool call)."""
        text, carried = "", False
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                text += content
                carried = True
            for call in delta.get("tool_calls") or []:
                carried = True
                entry = self._calls.setdefault(
                    int(call.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                )
                function = call.get("function") or {}
                entry["id"] = call.get("id") or entry["id"]
                entry["name"] = function.get("name") or entry["name"]
                entry["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        self._text.append(text)
        return text, carried

    def reply(self) -> LlmReply:
        calls = tuple(
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"])
            for i, c in sorted(self._calls.items())
            if c["name"]
        )
        return LlmReply("".join(self._text).strip(), calls)


def to_openai_messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments or "{}"},
                }
                for c in m.tool_calls
            ]
        if m.tool_call_id is not None:
            item["tool_call_id"] = m.tool_call_id
        out.append(item)
    return out


def request_body(config: OpenAILlmConfig, request: LlmRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": config.model,
        "messages": to_openai_messages(request.messages),
        "stream": True,
    }
    if config.temperature is not None:
        body["temperature"] = config.temperature
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in request.tools
        ]
    return body


def completions_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class OpenAILanguageModel:
    def __init__(
        self,
        config: OpenAILlmConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Clock,
        observer: ProviderObserver,
    ) -> None:
        self.name = "openai"
        self._config = config
        self._session = session
        self._clock = clock
        self._observer = observer

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._config.timeout_s, sock_read=self._config.timeout_s
        )
        started = self._clock.now()
        first = True
        try:
            async with self._session.post(
                completions_url(self._config.base_url),
                json=request_body(self._config, request),
                headers={"Authorization": f"Bearer {self._config.api_key}"},
                timeout=timeout,
            ) as response:
                if response.status != 200:
                    body = (await response.content.read(2000)).decode("utf-8", "replace")
                    self._observer.count_error("llm", self.name, f"http_{response.status}")
                    raise ProviderError(
                        "llm", self.name, f"HTTP {response.status}: {body}", status=response.status
                    )
                decoder, accumulator, done = SseDecoder(), ReplyAccumulator(), False
                async for data in response.content.iter_any():
                    for event in decoder.feed(data):
                        if event.event == "error":
                            self._observer.count_error("llm", self.name, "stream_error")
                            raise ProviderError("llm", self.name, f"error event: {event.data}")
                        if event.data.strip() == "[DONE]":
                            done = True
                            break
                        text, carried = accumulator.feed(json.loads(event.data))
                        if carried and first:
                            first = False
                            self._observer.observe_latency("llm", self.name, self._clock.now() - started)
                        if text:
                            yield TextDelta(text)
                    if done:
                        break
                if not done and accumulator.finish_reason is None:
                    self._observer.count_error("llm", self.name, "truncated")
                    raise ProviderError("llm", self.name, "stream ended before [DONE]")
                yield ReplyDone(accumulator.reply())
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, UnicodeDecodeError) as error:
            reason = "timeout" if isinstance(error, TimeoutError) else "transport"
            self._observer.count_error("llm", self.name, reason)
            raise ProviderError("llm", self.name, f"{reason}: {error!r}") from error
