"""The fake ElevenLabs server: text-to-speech over HTTP (whole, streamed, with timestamps) and both
websockets.

The asyncio adapter; the protocol logic is in :mod:`fake_providers.elevenlabs_streams` and the wire formats in
shared/protocols/providers.md ("ElevenLabs text-to-speech"). Only raw output formats are spoken
(``ulaw_8000``, ``alaw_8000``, ``pcm_<rate>``); an mp3/opus request is refused with 400 and an
ElevenLabs-style ``{"detail": {"status", "message"}}`` body, so a client that forgot to ask for telephony
audio finds out at once. Any API key is accepted; a request with none (``xi-api-key`` header, ``Authorization:
Bearer``, or for the websockets the query or the first message) is refused with 401. Point the SDK at it with
``ElevenLabs(base_url="http://host:port", api_key=...)``.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fake_providers.audio import PhraseVoice
from fake_providers.chaos import ChaosSettings, provider_app, provider_gate
from fake_providers.elevenlabs_streams import Chunk, InputStreamSession, http_alignment, phrase_chunks
from fake_providers.gate import Pacer, ProviderGate
from fake_providers.http import bearer_or_scheme, read_json
from fake_providers.latency import Latency, uniform
from fake_providers.outbox import OpenSockets, serve_socket, write_paced
from fake_providers.refusals import ElevenLabsErrors
from fake_providers.routes import RouteTable, by_method_and_path
from harness.audio.formats import AudioFormat, parse_elevenlabs_output_format
from harness.clock import Clock, MonotonicClock

#: the raw output formats ElevenLabs offers (and the fake speaks); mp3_* and opus_* are refused
SUPPORTED_OUTPUT_FORMATS = (
    "ulaw_8000",
    "alaw_8000",
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_32000",
    "pcm_44100",
    "pcm_48000",
)
#: ElevenLabs' default when no output_format is given
DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"


_BASE = "/v1/text-to-speech/{voice_id}"
#: route names for fault and limit filters: ``http`` and ``ws`` name the two families
_ROUTE_NAMES = {
    ("POST", _BASE): "http.convert",
    ("POST", _BASE + "/stream"): "http.stream",
    ("POST", _BASE + "/with-timestamps"): "http.with_timestamps",
    ("POST", _BASE + "/stream/with-timestamps"): "http.stream_with_timestamps",
    ("GET", _BASE + "/stream-input"): "ws.stream_input",
    ("GET", _BASE + "/multi-stream-input"): "ws.multi_stream_input",
}
ROUTES = RouteTable(tuple(_ROUTE_NAMES.values()))


class ElevenLabsConfig(ChaosSettings):
    """The fake ElevenLabs' behaviour. Defaults are a fast, healthy provider."""

    model_config = ConfigDict(extra="forbid")
    route_table = ROUTES

    port: int | None = Field(default=None, ge=0, le=65535)
    #: seeds this provider's random choices; None: derived from the config file's top-level ``seed``
    seed: int | None = None
    #: ``ttfb`` to the first audio byte, ``chunk_interval`` between audio chunks (faster than real time)
    # healthy: ElevenLabs' Flash models answer in ~75 ms of model time; with the network, 50-110 ms to the first byte
    latency: Latency = Latency(ttfb=uniform(0.05, 0.11), chunk_interval=uniform(0.02, 0.05))
    #: milliseconds of audio per chunk
    chunk_ms: int = Field(default=160, gt=0)
    #: a websocket's inactivity timeout when the client does not set ``inactivity_timeout`` (ElevenLabs: 20 s)
    inactivity_timeout_s: float = Field(default=20.0, gt=0)


class TextToSpeechBody(BaseModel):
    """The request body of the HTTP endpoints (fields the fake does not use are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    text: str = Field(min_length=1)
    model_id: str | None = None
    voice_settings: dict[str, Any] | None = None


def _detail(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"detail": {"status": code, "message": message}}, status=status)


def _output_format(request: web.Request) -> AudioFormat | web.Response:
    name = request.query.get("output_format", DEFAULT_OUTPUT_FORMAT)
    if name not in SUPPORTED_OUTPUT_FORMATS:
        supported = ", ".join(SUPPORTED_OUTPUT_FORMATS)
        message = f"output_format {name!r} is not supported by this server; use one of {supported}"
        return _detail(400, "invalid_output_format", message)
    return parse_elevenlabs_output_format(name)


def _has_key(request: web.Request) -> bool:
    return bool(
        request.headers.get("xi-api-key")
        or bearer_or_scheme(request.headers, "bearer")
        or request.query.get("xi-api-key")
        or request.query.get("xi_api_key")
        or request.query.get("authorization")
    )


_NO_KEY = "Neither authorization header nor xi-api-key received, please provide one."


class _ElevenLabs:
    def __init__(self, config: ElevenLabsConfig, gate: ProviderGate, pacer: Pacer) -> None:
        self.config = config
        self.gate = gate
        self.pacer = pacer
        self.voice = PhraseVoice()
        self.sockets = OpenSockets()

    async def _prepare(self, request: web.Request) -> tuple[str, AudioFormat] | web.Response:
        """Auth, output format and body of an HTTP request: the text and format, or the error response."""
        if not _has_key(request):
            return _detail(401, "needs_authorization", _NO_KEY)
        fmt = _output_format(request)
        if isinstance(fmt, web.Response):
            return fmt
        try:
            body = TextToSpeechBody.model_validate(await read_json(request))
        except ValidationError as exc:
            # FastAPI's validation error shape, which ElevenLabs returns for a malformed body
            errors = [{"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
            return web.json_response({"detail": errors}, status=422)
        except ValueError as exc:
            error = {"type": "json_invalid", "loc": ["body"], "msg": str(exc)}
            return web.json_response({"detail": [error]}, status=422)
        return body.text, fmt

    def _headers(self, text: str, content_type: str) -> dict[str, str]:
        request_id = uuid.UUID(int=self.gate.rng.getrandbits(128), version=4).hex
        return {"Content-Type": content_type, "request-id": request_id, "x-character-count": str(len(text))}

    async def _generated(self, text: str, fmt: AudioFormat) -> list[Chunk]:
        """The chunks of ``text``, once the last would have been generated (non-streaming endpoints)."""
        chunks = phrase_chunks(self.voice, text, fmt, self.config.chunk_ms)
        dues = self.gate.plan(self.config.latency).schedule(self.pacer.clock.now(), len(chunks))
        if dues:
            await self.pacer.until(dues[-1])
        return chunks

    async def convert(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/text-to-speech/{voice_id}``: the whole audio, once it would all have been generated."""
        prepared = await self._prepare(request)
        if isinstance(prepared, web.Response):
            return prepared
        text, fmt = prepared
        body = b"".join(c.audio for c in await self._generated(text, fmt))
        return web.Response(body=body, headers=self._headers(text, "application/octet-stream"))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/text-to-speech/{voice_id}/stream``: raw audio, chunked, as it is generated."""
        prepared = await self._prepare(request)
        if isinstance(prepared, web.Response):
            return prepared
        text, fmt = prepared
        pieces = [c.audio for c in phrase_chunks(self.voice, text, fmt, self.config.chunk_ms)]
        dues = self.gate.plan(self.config.latency).schedule(self.pacer.clock.now(), len(pieces))
        response = web.StreamResponse(headers=self._headers(text, "application/octet-stream"))
        return await write_paced(request, response, pieces, dues, self.pacer)

    async def convert_with_timestamps(self, request: web.Request) -> web.StreamResponse:
        """``POST .../with-timestamps``: one JSON object with all the audio and the whole alignment."""
        prepared = await self._prepare(request)
        if isinstance(prepared, web.Response):
            return prepared
        text, fmt = prepared
        chunks = await self._generated(text, fmt)
        audio = b"".join(c.audio for c in chunks)
        alignment = http_alignment(Chunk(audio, 0.0, [char for c in chunks for char in c.chars]))
        body = {
            "audio_base64": base64.b64encode(audio).decode("ascii"),
            "alignment": alignment,
            "normalized_alignment": alignment,
        }
        return web.json_response(body, headers=self._headers(text, "application/json"))

    async def stream_with_timestamps(self, request: web.Request) -> web.StreamResponse:
        """``POST .../stream/with-timestamps``: newline-delimited JSON, one line per audio chunk."""
        prepared = await self._prepare(request)
        if isinstance(prepared, web.Response):
            return prepared
        text, fmt = prepared
        lines = []
        for chunk in phrase_chunks(self.voice, text, fmt, self.config.chunk_ms):
            alignment = http_alignment(chunk)
            line = {
                "audio_base64": base64.b64encode(chunk.audio).decode("ascii"),
                "alignment": alignment,
                "normalized_alignment": alignment,
            }
            lines.append(json.dumps(line).encode() + b"\n")
        dues = self.gate.plan(self.config.latency).schedule(self.pacer.clock.now(), len(lines))
        response = web.StreamResponse(headers=self._headers(text, "application/x-ndjson"))
        return await write_paced(request, response, lines, dues, self.pacer)

    async def stream_input(self, request: web.Request) -> web.StreamResponse:
        return await self._input_socket(request, multi=False)

    async def multi_stream_input(self, request: web.Request) -> web.StreamResponse:
        return await self._input_socket(request, multi=True)

    async def _input_socket(self, request: web.Request, *, multi: bool) -> web.StreamResponse:
        fmt = _output_format(request)
        if isinstance(fmt, web.Response):
            return fmt
        try:
            inactivity = float(request.query.get("inactivity_timeout", self.config.inactivity_timeout_s))
        except ValueError:
            return _detail(400, "invalid_request", "inactivity_timeout must be a number of seconds")
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        clock = self.pacer.clock
        session = InputStreamSession(
            multi=multi,
            fmt=fmt,
            voice=self.voice,
            plan=self.gate.plan(self.config.latency),
            chunk_ms=self.config.chunk_ms,
            auto_mode=request.query.get("auto_mode", "false").lower() == "true",
            authorized=_has_key(request),
            inactivity_timeout_s=inactivity,
            now=clock.now(),
        )
        await serve_socket(
            ws, session, pacer=self.pacer, sockets=self.sockets, idle_timeout_s=inactivity, request=request
        )
        return ws


def create_elevenlabs_app(
    config: ElevenLabsConfig | None = None, *, rng: random.Random | None = None, clock: Clock | None = None
) -> web.Application:
    """A fake ElevenLabs as an aiohttp app (HTTP and websockets on one port)."""
    config = config or ElevenLabsConfig()
    clock = clock or MonotonicClock()
    gate = provider_gate(
        "elevenlabs",
        config,
        rng=rng or random.Random(config.seed or 0),
        clock=clock,
        errors=ElevenLabsErrors(),
        describe=by_method_and_path(_ROUTE_NAMES),
    )
    server = _ElevenLabs(config, gate, Pacer(clock))
    app = provider_app(gate)
    app.on_shutdown.append(server.sockets.close_all)
    base = _BASE
    app.router.add_post(base, server.convert)
    app.router.add_post(base + "/stream", server.stream)
    app.router.add_post(base + "/with-timestamps", server.convert_with_timestamps)
    app.router.add_post(base + "/stream/with-timestamps", server.stream_with_timestamps)
    app.router.add_get(base + "/stream-input", server.stream_input)
    app.router.add_get(base + "/multi-stream-input", server.multi_stream_input)
    return app
