"""AssemblyAI Universal-Streaming speech-to-text (``GET /v3/ws`` websocket), the STT of another API family than
Deepgram: the runtime's STT fallback (safeguard 4). Protocol facts: fake_providers/assemblyai_turns.py.

The message parsing is a pure function (:func:`parse_streaming_message`); :class:`AssemblyAISpeechToText` is the
asyncio adapter over an ``aiohttp`` websocket. It maps AssemblyAI turns onto the runtime's Deepgram-shaped
events: a partial ``Turn`` is an interim :class:`Transcript`; the end of a turn (the formatted one when
``format_turns`` is on) is a final with ``speech_final``, which ends the caller's turn in the Endpointer.

Two AssemblyAI rules the adapter keeps: audio goes in chunks of 50 to 1000 ms (Twilio's 20 ms frames are batched
to ``chunk_ms``), and the stream is open only once ``Begin`` arrived (errors come in-band, as an ``Error`` frame
and a close, so a refused session is told from an open one by waiting for ``Begin``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp

from harness.audio.formats import AudioFormat
from harness.clock import Clock
from reference_runtime.config import AssemblyAISttConfig
from reference_runtime.providers.base import ProviderError, ProviderObserver, SttEvent, Transcript
from reference_runtime.providers.deepgram_stt import SendLog, ws_base

TERMINATE = json.dumps({"type": "Terminate"})
_ENCODINGS = {"linear16": "pcm_s16le", "mulaw": "pcm_mulaw"}


def streaming_url(config: AssemblyAISttConfig, audio_format: AudioFormat) -> str:
    encoding = _ENCODINGS.get(audio_format.encoding)
    if encoding is None:
        # the compatibility check refuses such a config at start (reference_runtime/compat.py)
        raise ValueError(f"AssemblyAI streaming takes pcm_s16le or pcm_mulaw, not {audio_format.encoding}")
    query = {
        "sample_rate": str(audio_format.sample_rate),
        "encoding": encoding,
        "format_turns": "true" if config.format_turns else "false",
        "min_end_of_turn_silence_when_confident": str(config.min_end_of_turn_silence_ms),
        "max_turn_silence": str(config.max_turn_silence_ms),
        "speech_model": config.speech_model,
    }
    return f"{ws_base(config.base_url)}/v3/ws?{urlencode(query)}"


@dataclass(frozen=True, slots=True)
class Begin:
    session_id: str


@dataclass(frozen=True, slots=True)
class Termination:
    audio_duration_s: float


@dataclass(frozen=True, slots=True)
class StreamingError:
    code: int
    message: str


StreamingMessage = Begin | Termination | StreamingError | Transcript


def parse_streaming_message(text: str, *, format_turns: bool) -> StreamingMessage | None:
    """A server text frame -> a message; turns the runtime does not use (the unformatted end of a turn when
    formatted ones follow) and unknown types -> ``None``. Raises ``ValueError`` for frames that are not JSON
    objects."""
    message = json.loads(text)
    if not isinstance(message, dict):
        raise ValueError("AssemblyAI message is not a JSON object")
    kind = message.get("type")
    if kind == "Begin":
        return Begin(str(message.get("id") or ""))
    if kind == "Termination":
        return Termination(float(message.get("audio_duration_seconds") or 0.0))
    if kind == "Error":
        return StreamingError(int(message.get("error_code") or 0), str(message.get("error") or ""))
    if kind != "Turn":
        return None
    end_of_turn = bool(message.get("end_of_turn"))
    if end_of_turn and format_turns and not message.get("turn_is_formatted"):
        return None  # the formatted copy of this turn follows: that one is the final
    words = message.get("words") or []
    start = float(words[0].get("start") or 0) / 1000 if words else 0.0
    end = float(words[-1].get("end") or 0) / 1000 if words else start
    return Transcript(
        text=str(message.get("transcript") or ""),
        is_final=end_of_turn,
        speech_final=end_of_turn,
        start=start,
        duration=max(0.0, end - start),
    )


class AssemblyAISttStream:
    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        name: str,
        config: AssemblyAISttConfig,
        audio_format: AudioFormat,
        clock: Clock,
        observer: ProviderObserver,
    ) -> None:
        self._ws = ws
        self._name = name
        self._config = config
        self._format = audio_format
        self._clock = clock
        self._observer = observer
        self._log = SendLog()
        self._chunk_bytes = audio_format.bytes_per_second * config.chunk_ms // 1000
        self._chunk_bytes -= self._chunk_bytes % audio_format.bytes_per_sample
        self._pending = bytearray()
        self._closing = False
        self._done = asyncio.Event()
        self._awaiting_first = True

    async def send_audio(self, audio: bytes) -> None:
        if self._closing or self._ws.closed:
            raise ProviderError("stt", self._name, "stream is closed")
        self._pending += audio
        while len(self._pending) >= self._chunk_bytes:  # a replayed backlog is longer than one chunk may be
            chunk = bytes(self._pending[: self._chunk_bytes])
            del self._pending[: self._chunk_bytes]
            await self._send(chunk)

    async def _send(self, chunk: bytes) -> None:
        try:
            await self._ws.send_bytes(chunk)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as error:
            self._observer.count_error("stt", self._name, "send")
            raise ProviderError("stt", self._name, f"send failed: {error}") from error
        self._log.sent(self._format.duration(len(chunk)), self._clock.now())

    async def events(self) -> AsyncIterator[SttEvent]:
        try:
            async for message in self._ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    try:
                        event = parse_streaming_message(message.data, format_turns=self._config.format_turns)
                    except (ValueError, TypeError, AttributeError) as error:
                        self._observer.count_error("stt", self._name, "bad_message")
                        raise ProviderError("stt", self._name, f"bad message: {error}") from error
                    if isinstance(event, StreamingError):
                        self._observer.count_error("stt", self._name, f"error_{event.code}")
                        raise ProviderError("stt", self._name, f"error {event.code}: {event.message}")
                    if isinstance(event, Transcript):
                        self._observe(event)
                        yield event
                elif message.type == aiohttp.WSMsgType.ERROR:
                    break
            if not self._closing:
                self._observer.count_error("stt", self._name, "dropped")
                raise ProviderError("stt", self._name, f"stream closed by the provider (code {self._ws.close_code})")
        finally:
            self._done.set()

    def _observe(self, event: Transcript) -> None:
        if not event.text:
            return
        sent_at = self._log.sent_at(event.start + event.duration)
        if self._awaiting_first and sent_at is not None:
            self._observer.observe_first_result("stt", self._name, self._clock.now() - sent_at)
        self._awaiting_first = event.is_final
        if event.is_final and sent_at is not None:
            self._observer.observe_latency("stt", self._name, self._clock.now() - sent_at)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                if self._pending:
                    # AssemblyAI refuses chunks under 50 ms: pad the tail with silence rather than drop it
                    tail = bytes(self._pending)
                    silence = b"\xff" if self._format.encoding == "mulaw" else b"\x00"
                    minimum = self._format.bytes_per_second // 20
                    await self._ws.send_bytes(tail + silence * max(0, minimum - len(tail)))
                await self._ws.send_str(TERMINATE)
            # The server sends the pending turns and Termination, then closes; nobody needs them after the call.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), timeout=0.5)
        await self._ws.close()


class AssemblyAISpeechToText:
    def __init__(
        self,
        config: AssemblyAISttConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Clock,
        observer: ProviderObserver,
    ) -> None:
        self.name = "assemblyai"
        self._config = config
        self._session = session
        self._clock = clock
        self._observer = observer

    async def open_stream(self, audio_format: AudioFormat, *, call_id: str) -> AssemblyAISttStream:
        try:
            url = streaming_url(self._config, audio_format)
        except ValueError as error:
            raise ProviderError("stt", self.name, str(error)) from error
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            async with asyncio.timeout(self._config.open_timeout_s):
                ws = await self._session.ws_connect(
                    url,
                    headers={"Authorization": self._config.api_key},
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    autoping=True,
                )
                await self._await_begin(ws)
        except aiohttp.WSServerHandshakeError as error:
            self._observer.count_error("stt", self.name, f"http_{error.status}")
            raise ProviderError("stt", self.name, f"handshake refused: {error.status}", status=error.status) from error
        except TimeoutError as error:
            self._observer.count_error("stt", self.name, "timeout")
            await _close_quietly(ws)
            raise ProviderError("stt", self.name, "timeout: no Begin") from error
        except (aiohttp.ClientError, OSError) as error:
            self._observer.count_error("stt", self.name, "connect")
            await _close_quietly(ws)
            raise ProviderError("stt", self.name, f"cannot connect: {error!r}") from error
        except ProviderError:
            await _close_quietly(ws)
            raise
        return AssemblyAISttStream(
            ws,
            name=self.name,
            config=self._config,
            audio_format=audio_format,
            clock=self._clock,
            observer=self._observer,
        )

    async def _await_begin(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The session is open once ``Begin`` came; an ``Error`` frame or a close before it is a refusal."""
        while True:
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                self._observer.count_error("stt", self.name, f"closed_{ws.close_code}")
                raise ProviderError("stt", self.name, f"closed before Begin (code {ws.close_code})")
            try:
                event = parse_streaming_message(message.data, format_turns=self._config.format_turns)
            except (ValueError, TypeError, AttributeError) as error:
                self._observer.count_error("stt", self.name, "bad_message")
                raise ProviderError("stt", self.name, f"bad message: {error}") from error
            if isinstance(event, StreamingError):
                self._observer.count_error("stt", self.name, f"error_{event.code}")
                raise ProviderError("stt", self.name, f"refused: {event.code} {event.message}")
            if isinstance(event, Begin):
                return


async def _close_quietly(ws: aiohttp.ClientWebSocketResponse | None) -> None:
    if ws is not None and not ws.closed:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
            await ws.close()
