"""The fake Anthropic Messages API: ``POST /v1/messages`` (streamed as server-sent events, or whole) and
``GET /v1/models``, the LLM of another API family than OpenAI (the runtime's LLM fallback, safeguard 4).

Replies come from the same script as the fake OpenAI (:class:`~fake_providers.openai_script.Rule`: ``if_system``,
``if_last_user``, ``if_last_role``), read from the Anthropic request: the ``system`` parameter is the system text;
a user message made only of ``tool_result`` blocks counts as role ``tool`` (what OpenAI calls it), and the last
user text is that of the last user message with text. A scripted tool call becomes a ``tool_use`` block.

Wire format (Anthropic API reference, "Messages" and "Streaming Messages"):

- request headers ``x-api-key`` (or ``Authorization: Bearer``) and ``anthropic-version``; body ``model``,
  ``max_tokens`` (required), ``messages`` (``role`` user/assistant, ``content`` a string or blocks), ``system``,
  ``tools``, ``stream``;
- the stream: ``message_start``, ``content_block_start`` (``text``), ``ping``, ``content_block_delta``
  (``text_delta``) ..., ``content_block_stop``, for each tool call ``content_block_start`` (``tool_use`` with
  ``id``, ``name``, ``input: {}``), ``content_block_delta`` (``input_json_delta`` ``partial_json``) ...,
  ``content_block_stop``, then ``message_delta`` (``stop_reason`` ``end_turn`` or ``tool_use``, ``usage``) and
  ``message_stop``; each as ``event: <type>`` + ``data: <json>``. The first event comes ``ttfb`` after the request,
  the next ones ``chunk_interval`` apart;
- errors: ``{"type": "error", "error": {"type", "message"}}`` with 400 ``invalid_request_error``, 401
  ``authentication_error``, 429 ``rate_limit_error`` (``retry-after`` and ``anthropic-ratelimit-*`` headers), 5xx
  ``api_error``; every response carries ``request-id``.

Point the SDK at it with ``anthropic.AsyncAnthropic(base_url="http://host:port", api_key=...)``. Faults and limits:
the ``/_chaos`` control API (fake_providers/FAULTS.md), route names ``messages`` and ``models``.
"""

from __future__ import annotations

import json
import math
import random
import string
import uuid
from typing import Any, ClassVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fake_providers.chaos import ChaosSettings, provider_app, provider_gate
from fake_providers.gate import Pacer, ProviderGate
from fake_providers.http import bearer_or_scheme, read_json
from fake_providers.latency import Latency, uniform
from fake_providers.openai_script import (
    Conversation,
    Reply,
    Rule,
    argument_pieces,
    choose_reply,
    content_pieces,
    content_text,
    count_tokens,
)
from fake_providers.outbox import write_paced
from fake_providers.refusals import RateLimited, Refusal
from fake_providers.routes import UNMATCHED, RequestInfo, RouteTable, canonical_path
from harness.clock import Clock, MonotonicClock

_ROUTE_NAMES = {
    ("POST", "/v1/messages"): "messages",
    ("GET", "/v1/models"): "models",
}
ROUTES = RouteTable(("messages", "models"))
_PEEK_LIMIT = 1 << 20


async def _describe(request: web.Request) -> RequestInfo:
    path = canonical_path(request)
    name = _ROUTE_NAMES.get((request.method, path), UNMATCHED)
    model = None
    if name == "messages" and (request.content_length or 0) <= _PEEK_LIMIT:
        try:
            body = json.loads(await request.read() or b"null")  # aiohttp keeps it for the handler
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            model = body["model"]
    return RequestInfo(path, name, model)


class AnthropicConfig(ChaosSettings):
    """The fake Messages API's behaviour: the script (shared with the fake OpenAI) and its latency."""

    model_config = ConfigDict(extra="forbid")
    route_table = ROUTES

    port: int | None = Field(default=None, ge=0, le=65535)
    #: seeds this provider's random choices; None: derived from the config file's top-level ``seed``
    seed: int | None = None
    #: ``ttfb`` to the first event (``message_start``), ``chunk_interval`` between events
    latency: Latency = Latency(ttfb=uniform(0.1, 0.2), chunk_interval=uniform(0.01, 0.03))
    #: evaluated in order, the first rule that matches answers (the fake OpenAI's script format)
    script: list[Rule] = Field(default_factory=list)
    default_reply: str = "Sure, I can help with that."
    #: words of text per ``text_delta``
    words_per_chunk: int = Field(default=3, gt=0)
    models: list[str] = Field(
        default_factory=lambda: ["claude-3-5-haiku-latest", "claude-sonnet-4-5", "claude-haiku-4-5"]
    )


class AnthropicErrors:
    """Anthropic's error dialect ("Errors" in the API reference): ``{"type": "error", "error": {"type",
    "message"}}`` and a ``request-id`` header."""

    _TYPES: ClassVar[dict[int, tuple[str, str]]] = {
        500: ("api_error", "Internal server error"),
        502: ("api_error", "Bad gateway"),
        503: ("api_error", "Service unavailable"),
        504: ("api_error", "Gateway timeout"),
    }

    @staticmethod
    def _refusal(status: int, kind: str, message: str, rng: random.Random, refusal_kind: str) -> Refusal:
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return Refusal(status, body, {"request-id": _request_id(rng)}, refusal_kind)

    def rate_limited(self, limited: RateLimited, request: RequestInfo, rng: random.Random) -> Refusal:
        message = "This request would exceed the rate limit for your organization. Please try again later."
        refusal = self._refusal(429, "rate_limit_error", message, rng, limited.kind)
        limit = str(limited.limit if limited.limit is not None else 50)
        refusal.headers.update(
            {
                "anthropic-ratelimit-requests-limit": limit,
                "anthropic-ratelimit-requests-remaining": "0",
            }
        )
        if limited.retry_after_header is not False:  # Anthropic sends retry-after on its 429s
            refusal.headers["retry-after"] = str(max(0, math.ceil(limited.retry_after_s)))
        return refusal

    def server_error(self, status: int, request: RequestInfo, rng: random.Random, *, kind: str = "error") -> Refusal:
        error_type, message = self._TYPES.get(status, self._TYPES[500])
        return self._refusal(status, error_type, message, rng, kind)


def _request_id(rng: random.Random) -> str:
    return "req_" + "".join(rng.choices(string.ascii_letters + string.digits, k=24))


def _error(status: int, kind: str, message: str, rng: random.Random) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers={"request-id": _request_id(rng)})


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]]


class MessagesRequest(BaseModel):
    """The fields the fake reads; the rest (tools, temperature, metadata...) is accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False


def _is_tool_results(message: Message) -> bool:
    return (
        isinstance(message.content, list)
        and bool(message.content)
        and all(block.get("type") == "tool_result" for block in message.content)
    )


def conversation_of(body: MessagesRequest) -> Conversation:
    """What the script's rules look at, read from an Anthropic request."""
    system = content_text(body.system) if body.system is not None else ""
    users = [m for m in body.messages if m.role == "user" and not _is_tool_results(m)]
    last_user = content_text(users[-1].content) if users else ""
    last = body.messages[-1]
    last_role = "tool" if last.role == "user" and _is_tool_results(last) else last.role
    return Conversation(system, last_user, last_role)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _tool_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def _usage(body: MessagesRequest, reply: Reply) -> tuple[int, int]:
    prompt = sum(count_tokens(content_text(m.content)) + 4 for m in body.messages)
    if body.system is not None:
        prompt += count_tokens(content_text(body.system))
    output = count_tokens(reply.content or "") + sum(
        count_tokens(c.name) + count_tokens(c.arguments) for c in reply.tool_calls
    )
    return prompt, output


def message_events(
    reply: Reply, message_id: str, model: str, *, words_per_piece: int, usage: tuple[int, int]
) -> list[bytes]:
    """Every server-sent event of a streamed reply, in order (sans-I/O)."""
    input_tokens, output_tokens = usage
    stop_reason = "tool_use" if reply.tool_calls else "end_turn"
    events = [
        _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": model,
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                },
            },
        )
    ]
    index = 0
    if reply.content:
        events.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
        )
        events.append(_sse("ping", {"type": "ping"}))
        for piece in content_pieces(reply.content, words_per_piece):
            delta = {"type": "text_delta", "text": piece}
            events.append(_sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    for call in reply.tool_calls:
        block = {"type": "tool_use", "id": _tool_id(call.id), "name": call.name, "input": {}}
        events.append(
            _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        for piece in argument_pieces(call.arguments, 8 * words_per_piece):
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    events.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        )
    )
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


def message_body(reply: Reply, message_id: str, model: str, usage: tuple[int, int]) -> dict[str, Any]:
    """The non-streamed ``message`` object."""
    content: list[dict[str, Any]] = []
    if reply.content:
        content.append({"type": "text", "text": reply.content})
    for call in reply.tool_calls:
        content.append(
            {"type": "tool_use", "id": _tool_id(call.id), "name": call.name, "input": json.loads(call.arguments)}
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


class _Anthropic:
    def __init__(self, config: AnthropicConfig, gate: ProviderGate, pacer: Pacer) -> None:
        self.config = config
        self.gate = gate
        self.pacer = pacer

    def _authorized(self, request: web.Request) -> bool:
        return bool(request.headers.get("x-api-key") or bearer_or_scheme(request.headers, "bearer"))

    async def messages(self, request: web.Request) -> web.StreamResponse:
        rng = self.gate.rng
        if not self._authorized(request):
            return _error(401, "authentication_error", "x-api-key header is required", rng)
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required", rng)
        try:
            body = MessagesRequest.model_validate(await read_json(request))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            return _error(400, "invalid_request_error", f"{field}: {first['msg']}", rng)
        except ValueError as exc:
            return _error(400, "invalid_request_error", str(exc), rng)
        reply = choose_reply(self.config.script, self.config.default_reply, conversation_of(body), rng)
        message_id = "msg_" + uuid.UUID(int=rng.getrandbits(128), version=4).hex[:24]
        usage = _usage(body, reply)
        headers = {"request-id": _request_id(rng)}
        if not body.stream:
            dues = self.gate.plan(self.config.latency).schedule(self.pacer.clock.now(), 1)
            await self.pacer.until(dues[-1])
            return web.json_response(message_body(reply, message_id, body.model, usage), headers=headers)
        events = message_events(reply, message_id, body.model, words_per_piece=self.config.words_per_chunk, usage=usage)
        dues = self.gate.plan(self.config.latency).schedule(self.pacer.clock.now(), len(events))
        response = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        return await write_paced(request, response, events, dues, self.pacer)

    async def models(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(401, "authentication_error", "x-api-key header is required", self.gate.rng)
        data = [
            {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}
            for name in self.config.models
        ]
        return web.json_response(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )


def create_anthropic_app(
    config: AnthropicConfig | None = None, *, rng: random.Random | None = None, clock: Clock | None = None
) -> web.Application:
    """A fake Anthropic Messages API as an aiohttp app."""
    config = config or AnthropicConfig()
    clock = clock or MonotonicClock()
    gate = provider_gate(
        "anthropic",
        config,
        rng=rng or random.Random(config.seed or 0),
        clock=clock,
        errors=AnthropicErrors(),
        describe=_describe,
    )
    server = _Anthropic(config, gate, Pacer(clock))
    app = provider_app(gate)
    app.router.add_post("/v1/messages", server.messages)
    app.router.add_get("/v1/models", server.models)
    return app


__all__ = ["AnthropicConfig", "AnthropicErrors", "conversation_of", "create_anthropic_app", "message_events"]
