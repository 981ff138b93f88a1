"""The fake OpenAI-compatible chat completions server: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The asyncio adapter around :mod:`fake_providers.openai_script`; the wire format is in
shared/protocols/providers.md, "OpenAI chat completions (streaming)". Replies are scripted (see
:class:`~fake_providers.openai_script.Rule`); streamed replies come as server-sent events ``data: {chunk}``
... ``data: [DONE]``, the first chunk ``ttfb`` after the request and the next ones ``chunk_interval`` apart; a
non-streamed reply is answered when its last chunk would have been. Any ``Authorization: Bearer`` key is
accepted; a request without one gets OpenAI's 401. Point the SDK at it with
``AsyncOpenAI(base_url="http://host:port/v1", api_key=...)``.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fake_providers.chaos import ChaosSettings, provider_app, provider_gate
from fake_providers.gate import Pacer, ProviderGate
from fake_providers.http import bearer_or_scheme, read_json
from fake_providers.latency import Latency, uniform
from fake_providers.openai_script import (
    CompletionMeta,
    Conversation,
    Rule,
    choose_reply,
    completion_body,
    completion_id,
    stream_chunks,
    usage,
)
from fake_providers.outbox import write_paced
from fake_providers.refusals import OpenAIErrors
from fake_providers.routes import UNMATCHED, RequestInfo, RouteTable, canonical_path
from harness.clock import Clock, MonotonicClock

#: route names for fault and limit filters
_ROUTE_NAMES = {
    ("POST", "/v1/chat/completions"): "chat",
    ("GET", "/v1/models"): "models",
    ("GET", "/v1/models/{model}"): "models",
}
ROUTES = RouteTable(("chat", "models"))
#: a chat body larger than this is not read for its model name (the 429 message then names a default)
_PEEK_LIMIT = 1 << 20


async def _describe(request: web.Request) -> RequestInfo:
    """The route, and the model a chat request asks for: OpenAI's 429 message names it."""
    path = canonical_path(request)
    name = _ROUTE_NAMES.get((request.method, path), UNMATCHED)
    model = None
    if name == "chat" and (request.content_length or 0) <= _PEEK_LIMIT:
        try:
            body = json.loads(await request.read() or b"null")  # aiohttp keeps it for the handler
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            model = body["model"]
    return RequestInfo(path, name, model)


class OpenAIConfig(ChaosSettings):
    """The fake LLM's behaviour: its script and its latency. Defaults are a fast, healthy provider."""

    model_config = ConfigDict(extra="forbid")
    route_table = ROUTES

    port: int | None = Field(default=None, ge=0, le=65535)
    #: seeds this provider's random choices; None: derived from the config file's top-level ``seed``
    seed: int | None = None
    #: ``ttfb`` to the first chunk (first token), ``chunk_interval`` between chunks
    latency: Latency = Latency(ttfb=uniform(0.1, 0.2), chunk_interval=uniform(0.01, 0.03))
    #: evaluated in order, the first rule that matches answers
    script: list[Rule] = Field(default_factory=list)
    default_reply: str = "Sure, I can help with that."
    #: words of content per streamed chunk
    words_per_chunk: int = Field(default=3, gt=0)
    #: what ``GET /v1/models`` lists (any model name is accepted in a request)
    models: list[str] = Field(default_factory=lambda: ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"])


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str


class ChatRequest(BaseModel):
    """The request fields the fake reads; everything else (tools, temperature...) is accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None


def _error(
    status: int, message: str, kind: str, param: str | None = None, code: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer"
    " auth (i.e. Authorization: Bearer YOUR_KEY)."
)


class _OpenAI:
    def __init__(self, config: OpenAIConfig, gate: ProviderGate, pacer: Pacer) -> None:
        self.config = config
        self.gate = gate
        self.pacer = pacer

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        if bearer_or_scheme(request.headers, "bearer") is None:
            return _error(401, _NO_KEY, "invalid_request_error")
        try:
            body = ChatRequest.model_validate(await read_json(request))
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            return _error(400, f"{param}: {first['msg']}", "invalid_request_error", param)
        except ValueError as exc:
            return _error(400, str(exc), "invalid_request_error")
        messages = [m.model_dump() for m in body.messages]
        reply = choose_reply(
            self.config.script, self.config.default_reply, Conversation.of(messages), self.gate.rng
        )
        meta = CompletionMeta(completion_id(self.gate.rng), int(time.time()), body.model)
        usage_body = usage(messages, reply)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = stream_chunks(
            reply,
            meta,
            words_per_piece=self.config.words_per_chunk,
            include_usage=include_usage,
            usage_body=usage_body,
        )
        dues = self.gate.plan(self.config.latency).schedule(self.pacer.clock.now(), len(chunks))
        headers = {"x-request-id": "req_" + meta.id.removeprefix("chatcmpl-")}
        if not body.stream:
            await self.pacer.until(dues[-1])
            return web.json_response(completion_body(reply, meta, usage_body), headers=headers)
        events = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks] + [b"data: [DONE]\n\n"]
        response = web.StreamResponse(
            headers={
                **headers,
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        return await write_paced(request, response, events, [*dues, dues[-1]], self.pacer)

    async def models(self, request: web.Request) -> web.StreamResponse:
        if bearer_or_scheme(request.headers, "bearer") is None:
            return _error(401, _NO_KEY, "invalid_request_error")
        return web.json_response({"object": "list", "data": [_model(name) for name in self.config.models]})

    async def model(self, request: web.Request) -> web.StreamResponse:
        if bearer_or_scheme(request.headers, "bearer") is None:
            return _error(401, _NO_KEY, "invalid_request_error")
        return web.json_response(_model(request.match_info["model"]))


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "voicechaos"}


def create_openai_app(
    config: OpenAIConfig | None = None, *, rng: random.Random | None = None, clock: Clock | None = None
) -> web.Application:
    """A fake OpenAI-compatible chat completions API as an aiohttp app."""
    config = config or OpenAIConfig()
    clock = clock or MonotonicClock()
    gate = provider_gate(
        "openai",
        config,
        rng=rng or random.Random(config.seed or 0),
        clock=clock,
        errors=OpenAIErrors(),
        describe=_describe,
    )
    server = _OpenAI(config, gate, Pacer(clock))
    app = provider_app(gate)
    app.router.add_post("/v1/chat/completions", server.chat_completions)
    app.router.add_get("/v1/models", server.models)
    app.router.add_get("/v1/models/{model}", server.model)
    return app
