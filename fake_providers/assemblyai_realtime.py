"""The fake AssemblyAI Universal-Streaming server (``GET /v3/ws`` websocket): live STT of another API family than
Deepgram (the runtime's STT fallback, safeguard 4).

The asyncio adapter around :mod:`fake_providers.assemblyai_turns` (which holds the protocol facts). Any key is
accepted: ``Authorization: <key>`` (AssemblyAI sends the raw key; ``Bearer <key>`` is accepted too) or ``token=``
in the query. As at AssemblyAI, the missing-key and bad-parameter errors are in-band, after the upgrade: an
``Error`` frame, then a close (1008, 3006).

One deliberate difference, for the fault machinery every fake shares: the gate's refusals (a ``rate_limit`` or
``error`` fault, a limit) are HTTP answers *before* the upgrade (429 / 5xx with ``{"error": "..."}``), where the
real service accepts the upgrade and closes with 1008 "Too many concurrent sessions". A client sees the handshake
fail either way; a test of in-band refusals can use a ``truncate`` fault with ``close_code``.

Route name for fault and limit filters: ``stream`` (fake_providers/FAULTS.md).
"""

from __future__ import annotations

import random
import time
import uuid
from typing import ClassVar

from aiohttp import web
from pydantic import ConfigDict, Field, ValidationError

from fake_providers.assemblyai_turns import (
    CLOSE_INVALID_MESSAGE,
    CLOSE_UNAUTHORIZED,
    StreamingOptions,
    TurnSession,
)
from fake_providers.chaos import ChaosSettings, provider_app, provider_gate
from fake_providers.gate import Pacer, ProviderGate
from fake_providers.http import bearer_or_scheme, describe_errors, query_dict
from fake_providers.latency import Latency, uniform
from fake_providers.outbox import OpenSockets, serve_socket
from fake_providers.refusals import RateLimited, Refusal
from fake_providers.routes import RequestInfo, RouteTable, by_method_and_path
from harness.clock import Clock, MonotonicClock

_ROUTE_NAMES = {("GET", "/v3/ws"): "stream"}
ROUTES = RouteTable(("stream",))


class AssemblyAIConfig(ChaosSettings):
    """The fake AssemblyAI's behaviour. Defaults are a fast, healthy provider."""

    model_config = ConfigDict(extra="forbid")
    route_table = ROUTES

    port: int | None = Field(default=None, ge=0, le=65535)
    #: seeds this provider's random choices; None: derived from the config file's top-level ``seed``
    seed: int | None = None
    #: ``ttfb`` from the end-of-turn silence to the end-of-turn ``Turn``; ``chunk_interval`` delays partials (and
    #: the formatted turn after the unformatted one)
    stt: Latency = Latency(ttfb=uniform(0.05, 0.1), chunk_interval=uniform(0.01, 0.03))
    #: at most one partial ``Turn`` per this many seconds of audio
    interim_every_s: float = Field(default=0.3, ge=0)
    #: refuse audio chunks outside 50-1000 ms (close 3007), as AssemblyAI does
    enforce_chunk_duration: bool = True


class AssemblyAIErrors:
    """The fake's HTTP refusals (the gate's): AssemblyAI's REST error shape ``{"error": "<message>"}``."""

    _MESSAGES: ClassVar[dict[int, str]] = {
        500: "Internal server error",
        502: "Bad gateway",
        503: "Service unavailable",
        504: "Gateway timeout",
    }

    def rate_limited(self, limited: RateLimited, request: RequestInfo, rng: random.Random) -> Refusal:
        message = "Unauthorized Connection: Too many concurrent sessions"
        headers = {"x-request-id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
        if limited.retry_after_header:
            headers["retry-after"] = str(max(0, round(limited.retry_after_s)))
        return Refusal(429, {"error": message}, headers, limited.kind)

    def server_error(self, status: int, request: RequestInfo, rng: random.Random, *, kind: str = "error") -> Refusal:
        headers = {"x-request-id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
        return Refusal(status, {"error": self._MESSAGES.get(status, self._MESSAGES[500])}, headers, kind)


def _has_key(request: web.Request) -> bool:
    raw = request.headers.get("Authorization", "").strip()
    return bool(raw or bearer_or_scheme(request.headers, "bearer") or request.query.get("token"))


class _AssemblyAI:
    def __init__(self, config: AssemblyAIConfig, gate: ProviderGate, pacer: Pacer) -> None:
        self.config = config
        self.gate = gate
        self.pacer = pacer
        self.sockets = OpenSockets()

    async def _refuse(self, request: web.Request, code: int, message: str) -> web.WebSocketResponse:
        """An in-band refusal, as AssemblyAI makes them: upgrade, ``Error`` frame, close with the same code."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "Error", "error_code": code, "error": message})
        await ws.close(code=code, message=message[:120].encode())
        return ws

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if not _has_key(request):
            return await self._refuse(
                request, CLOSE_UNAUTHORIZED, "Unauthorized Connection: Missing Authorization header"
            )
        try:
            options = StreamingOptions.model_validate(query_dict(request))
        except ValidationError as exc:
            return await self._refuse(request, CLOSE_INVALID_MESSAGE, f"Invalid query: {describe_errors(exc)}")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        clock = self.pacer.clock
        session = TurnSession(
            options,
            session_id=str(uuid.UUID(int=self.gate.rng.getrandbits(128), version=4)),
            plan=self.gate.plan(self.config.stt),
            now=clock.now(),
            wall_now=time.time(),
            interim_every_s=self.config.interim_every_s,
            enforce_chunk_duration=self.config.enforce_chunk_duration,
        )
        await serve_socket(
            ws,
            session,
            pacer=self.pacer,
            sockets=self.sockets,
            idle_timeout_s=float(options.inactivity_timeout) if options.inactivity_timeout else None,
            opening=session.opened(clock.now()),
            request=request,
        )
        return ws


def create_assemblyai_app(
    config: AssemblyAIConfig | None = None, *, rng: random.Random | None = None, clock: Clock | None = None
) -> web.Application:
    """A fake AssemblyAI Universal-Streaming server as an aiohttp app."""
    config = config or AssemblyAIConfig()
    clock = clock or MonotonicClock()
    gate = provider_gate(
        "assemblyai",
        config,
        rng=rng or random.Random(config.seed or 0),
        clock=clock,
        errors=AssemblyAIErrors(),
        describe=by_method_and_path(_ROUTE_NAMES),
    )
    server = _AssemblyAI(config, gate, Pacer(clock))
    app = provider_app(gate)
    app.on_shutdown.append(server.sockets.close_all)
    app.router.add_get("/v3/ws", server.stream)
    return app


__all__ = ["AssemblyAIConfig", "create_assemblyai_app"]
