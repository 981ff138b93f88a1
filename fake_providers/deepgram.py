"""The fake Deepgram server: live STT (``/v1/listen`` websocket) and Aura TTS (``/v1/speak`` REST and
websocket).

The asyncio adapter around :mod:`fake_providers.deepgram_listen` and :mod:`fake_providers.deepgram_speak`; the
wire formats are in shared/protocols/providers.md ("Deepgram live speech-to-text", "Deepgram Aura
text-to-speech"). Any API key is accepted (``Authorization: Token <key>`` or ``Bearer <key>``, or the
``Sec-WebSocket-Protocol: token, <key>`` form browsers use); a request without one is refused with 401 at the
handshake, as Deepgram does. Point the official SDK at it with
``DeepgramClientEnvironment(base="http://host:port", production="ws://host:port", ...)``.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fake_providers.audio import PhraseVoice, split_audio, wav_header
from fake_providers.chaos import ChaosSettings, provider_app, provider_gate
from fake_providers.deepgram_listen import ListenOptions, ListenSession
from fake_providers.deepgram_speak import SpeakOptions, SpeakSession
from fake_providers.gate import Pacer, ProviderGate
from fake_providers.http import bearer_or_scheme, describe_errors, query_dict, read_json
from fake_providers.latency import Latency, uniform
from fake_providers.outbox import OpenSockets, serve_socket, write_paced
from fake_providers.refusals import DeepgramErrors
from fake_providers.routes import RouteTable, by_method_and_path
from harness.clock import Clock, MonotonicClock

#: the query model of a websocket endpoint
OptionsT = TypeVar("OptionsT", bound=BaseModel)

#: route names for fault and limit filters (``speak`` covers both)
_ROUTE_NAMES = {
    ("GET", "/v1/listen"): "listen",
    ("GET", "/v1/speak"): "speak.ws",
    ("POST", "/v1/speak"): "speak.rest",
}
ROUTES = RouteTable(tuple(_ROUTE_NAMES.values()))


class DeepgramConfig(ChaosSettings):
    """The fake Deepgram's behaviour. Defaults are a fast, healthy provider."""

    model_config = ConfigDict(extra="forbid")
    route_table = ROUTES

    port: int | None = Field(default=None, ge=0, le=65535)
    #: seeds this provider's random choices; None: derived from the config file's top-level ``seed``
    seed: int | None = None
    #: live STT: ``ttfb`` from the endpoint to the final transcript, ``chunk_interval`` delays interim results
    stt: Latency = Latency(ttfb=uniform(0.05, 0.1), chunk_interval=uniform(0.01, 0.03))
    #: Aura TTS: ``ttfb`` to the first audio byte, ``chunk_interval`` between audio chunks (faster than real
    #: time)
    tts: Latency = Latency(ttfb=uniform(0.08, 0.15), chunk_interval=uniform(0.02, 0.05))
    #: milliseconds of audio per TTS chunk
    tts_chunk_ms: int = Field(default=160, gt=0)
    #: seconds with neither audio nor a text message after which a listen socket is closed (1011 NET-0001)
    idle_timeout_s: float = Field(default=10.0, gt=0)
    #: at most one interim result per this many seconds of audio
    interim_every_s: float = Field(default=0.5, ge=0)
    #: an empty binary frame ends the stream (flush, Metadata, close 1000), as it does at Deepgram; a client
    #: that sends ``b""`` when it has no audio yet loses its stream. False: empty frames are ignored.
    close_on_empty_frame: bool = True


def _error(status: int, code: str, message: str, request_id: str) -> web.Response:
    return web.json_response({"err_code": code, "err_msg": message, "request_id": request_id}, status=status)


def _unauthorized(request_id: str) -> web.Response:
    return _error(401, "INVALID_AUTH", "Invalid credentials.", request_id)


def _credential(request: web.Request) -> tuple[str | None, bool]:
    """The API key, and whether it came in ``Sec-WebSocket-Protocol`` (then ``token`` is selected)."""
    key = bearer_or_scheme(request.headers, "token", "bearer")
    if key:
        return key, False
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    if len(protocols) >= 2 and protocols[0].lower() in ("token", "bearer"):
        return protocols[1], True
    return None, False


class _Deepgram:
    def __init__(self, config: DeepgramConfig, gate: ProviderGate, pacer: Pacer) -> None:
        self.config = config
        self.gate = gate
        self.pacer = pacer
        self.voice = PhraseVoice()
        self.sockets = OpenSockets()

    def _ids(self, model: str) -> tuple[str, str]:
        request_id = str(uuid.UUID(int=self.gate.rng.getrandbits(128), version=4))
        return request_id, str(uuid.uuid5(uuid.NAMESPACE_URL, f"voicechaos-fake/{model}"))

    # -- /v1/listen ------------------------------------------------------------------------------------------

    async def _accept(
        self, request: web.Request, options_model: type[OptionsT], default_model: str
    ) -> tuple[web.WebSocketResponse, OptionsT, str, str] | web.Response:
        """Authenticate and validate a websocket handshake (``/v1/listen``, ``/v1/speak``); refusals are HTTP,
        as Deepgram's are, before the upgrade."""
        request_id, model_uuid = self._ids(request.query.get("model", default_model))
        key, via_protocol = _credential(request)
        if key is None:
            return _unauthorized(request_id)
        try:
            options = options_model.model_validate(query_dict(request))
        except ValidationError as exc:
            return _error(400, "INVALID_QUERY_PARAMETER", describe_errors(exc), request_id)
        ws = web.WebSocketResponse(protocols=("token", "bearer") if via_protocol else ())
        await ws.prepare(request)
        return ws, options, request_id, model_uuid

    async def listen(self, request: web.Request) -> web.StreamResponse:
        accepted = await self._accept(request, ListenOptions, "nova-3")
        if isinstance(accepted, web.Response):
            return accepted
        ws, options, request_id, model_uuid = accepted
        clock = self.pacer.clock
        session = ListenSession(
            options,
            request_id=request_id,
            model_uuid=model_uuid,
            created=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            plan=self.gate.plan(self.config.stt),
            now=clock.now(),
            interim_every_s=self.config.interim_every_s,
            close_on_empty_frame=self.config.close_on_empty_frame,
        )
        await serve_socket(
            ws,
            session,
            pacer=self.pacer,
            sockets=self.sockets,
            idle_timeout_s=self.config.idle_timeout_s,
            request=request,
        )
        return ws

    # -- /v1/speak -------------------------------------------------------------------------------------------

    async def speak_rest(self, request: web.Request) -> web.StreamResponse:
        request_id, _ = self._ids(request.query.get("model", "aura-2"))
        if _credential(request)[0] is None:
            return _unauthorized(request_id)
        if "encoding" not in request.query:
            message = "encoding is required: the fake speaks linear16, mulaw or alaw (not the mp3 default)"
            return _error(400, "INVALID_QUERY_PARAMETER", message, request_id)
        try:
            options = SpeakOptions.model_validate(query_dict(request))
            body = await read_json(request)
        except ValidationError as exc:
            return _error(400, "INVALID_QUERY_PARAMETER", describe_errors(exc), request_id)
        except ValueError as exc:
            return _error(400, "INVALID_BODY", str(exc), request_id)
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return _error(
                400, "INVALID_BODY", "body must be a JSON object with a non-empty 'text'", request_id
            )
        fmt = options.audio_format
        audio = self.voice.render(text, fmt)
        pieces = split_audio(audio, fmt, self.config.tts_chunk_ms)
        wav = (options.container or "wav") == "wav"
        if wav:
            pieces = [wav_header(fmt, len(audio)) + (pieces[0] if pieces else b""), *pieces[1:]]
        headers = {
            "Content-Type": "audio/wav" if wav else "application/octet-stream",
            "dg-request-id": request_id,
            "dg-model-name": options.model,
            "dg-char-count": str(len(text)),
        }
        dues = self.gate.plan(self.config.tts).schedule(self.pacer.clock.now(), len(pieces))
        return await write_paced(request, web.StreamResponse(headers=headers), pieces, dues, self.pacer)

    async def speak_ws(self, request: web.Request) -> web.StreamResponse:
        accepted = await self._accept(request, SpeakOptions, "aura-2")
        if isinstance(accepted, web.Response):
            return accepted
        ws, options, request_id, model_uuid = accepted
        clock = self.pacer.clock
        session = SpeakSession(
            options,
            voice=self.voice,
            plan=self.gate.plan(self.config.tts),
            chunk_ms=self.config.tts_chunk_ms,
            request_id=request_id,
            model_uuid=model_uuid,
            now=clock.now(),
        )
        await serve_socket(
            ws,
            session,
            pacer=self.pacer,
            sockets=self.sockets,
            opening=session.opened(clock.now()),
            request=request,
        )
        return ws


def create_deepgram_app(
    config: DeepgramConfig | None = None, *, rng: random.Random | None = None, clock: Clock | None = None
) -> web.Application:
    """A fake Deepgram as an aiohttp app (HTTP and websockets on one port)."""
    config = config or DeepgramConfig()
    clock = clock or MonotonicClock()
    gate = provider_gate(
        "deepgram",
        config,
        rng=rng or random.Random(config.seed or 0),
        clock=clock,
        errors=DeepgramErrors(),
        describe=by_method_and_path(_ROUTE_NAMES),
    )
    server = _Deepgram(config, gate, Pacer(clock))
    app = provider_app(gate)
    app.on_shutdown.append(server.sockets.close_all)
    app.router.add_get("/v1/listen", server.listen)
    app.router.add_get("/v1/speak", server.speak_ws)
    app.router.add_post("/v1/speak", server.speak_rest)
    return app


__all__ = ["DeepgramConfig", "create_deepgram_app"]
