"""Deepgram live speech-to-text (``GET /v1/listen`` websocket; providers.md "Deepgram live speech-to-text").

The message parsing is a pure function (:func:`parse_listen_message`); :class:`DeepgramSpeechToText` is the
asyncio adapter over an ``aiohttp`` websocket. Latency reported to the observer ("STT final-transcript
latency") is the time from sending the audio that ends a final result (``start + duration``) to receiving that
result; "first result" latency is the same for the first result with words of each utterance (an interim, usually).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp

from harness.audio.formats import AudioFormat
from harness.clock import Clock
from reference_runtime.config import DeepgramSttConfig
from reference_runtime.providers.base import (
    ProviderError,
    ProviderObserver,
    SttEvent,
    Transcript,
    UtteranceEnd,
)

CLOSE_STREAM = json.dumps({"type": "CloseStream"})
KEEP_ALIVE = json.dumps({"type": "KeepAlive"})


def ws_base(base_url: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    return base


def listen_url(config: DeepgramSttConfig, audio_format: AudioFormat) -> str:
    # ``channels`` is left at Deepgram's default (1): Twilio audio is mono.
    query = {
        "model": config.model,
        "encoding": audio_format.encoding,
        "sample_rate": str(audio_format.sample_rate),
        "interim_results": "true",
        "endpointing": str(config.endpointing_ms),
        "punctuate": "true",
    }
    if config.utterance_end_ms is not None:
        query["utterance_end_ms"] = str(config.utterance_end_ms)
    return f"{ws_base(config.base_url)}/v1/listen?{urlencode(query)}"


def parse_listen_message(text: str) -> SttEvent | None:
    """A server text frame -> an event; ``Metadata``, ``SpeechStarted`` and unknown types -> ``None``.
    Raises ``ValueError`` for frames that are not JSON objects (the adapter turns it into a ProviderError)."""
    message = json.loads(text)
    if not isinstance(message, dict):
        raise ValueError("Deepgram message is not a JSON object")
    kind = message.get("type")
    if kind == "Results":
        alternatives = (message.get("channel") or {}).get("alternatives") or [{}]
        return Transcript(
            text=str(alternatives[0].get("transcript") or ""),
            is_final=bool(message.get("is_final")),
            speech_final=bool(message.get("speech_final")),
            start=float(message.get("start") or 0.0),
            duration=float(message.get("duration") or 0.0),
        )
    if kind == "UtteranceEnd":
        return UtteranceEnd(float(message.get("last_word_end") or 0.0))
    return None


class SendLog:
    """When each stretch of audio was sent, to time a final result against the audio it covers."""

    def __init__(self, maxlen: int = 6000) -> None:
        self._sent: deque[tuple[float, float]] = deque(maxlen=maxlen)  # (audio end in s, clock time sent)
        self.audio_s = 0.0

    def sent(self, seconds: float, now: float) -> None:
        self.audio_s += seconds
        self._sent.append((self.audio_s, now))

    def sent_at(self, audio_end_s: float) -> float | None:
        while len(self._sent) > 1 and self._sent[0][0] < audio_end_s - 1e-6:
            self._sent.popleft()
        if self._sent and self._sent[0][0] >= audio_end_s - 1e-6:
            return self._sent[0][1]
        return None


class DeepgramSttStream:
    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        name: str,
        audio_format: AudioFormat,
        keepalive_s: float,
        clock: Clock,
        observer: ProviderObserver,
    ) -> None:
        self._ws = ws
        self._name = name
        self._format = audio_format
        self._clock = clock
        self._observer = observer
        self._log = SendLog()
        self._closing = False
        self._done = asyncio.Event()
        self._last_send = asyncio.get_running_loop().time()
        self._keepalive_s = keepalive_s
        self._close_wait_s = 0.5
        self._keepalive = asyncio.create_task(self._keep_alive(), name="deepgram-keepalive")
        self._awaiting_first = True  # the next result with words is the first of its utterance

    async def send_audio(self, audio: bytes) -> None:
        if not audio:
            return  # an empty binary frame is Deepgram's legacy "end of audio": it would close the stream
        if self._closing or self._ws.closed:
            raise ProviderError("stt", self._name, "stream is closed")
        try:
            await self._ws.send_bytes(audio)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as error:
            self._observer.count_error("stt", self._name, "send")
            raise ProviderError("stt", self._name, f"send failed: {error}") from error
        self._last_send = asyncio.get_running_loop().time()
        self._log.sent(self._format.duration(len(audio)), self._clock.now())

    async def events(self) -> AsyncIterator[SttEvent]:
        try:
            async for message in self._ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    try:
                        event = parse_listen_message(message.data)
                    except (ValueError, TypeError, AttributeError) as error:
                        self._observer.count_error("stt", self._name, "bad_message")
                        raise ProviderError("stt", self._name, f"bad message: {error}") from error
                    if event is None:
                        continue
                    if isinstance(event, Transcript) and event.text:
                        self._observe(event)
                    elif isinstance(event, UtteranceEnd):
                        self._awaiting_first = True
                    yield event
                elif message.type == aiohttp.WSMsgType.ERROR:
                    break
            if not self._closing:
                self._observer.count_error("stt", self._name, "dropped")
                raise ProviderError(
                    "stt", self._name, f"stream closed by the provider (code {self._ws.close_code})"
                )
        finally:
            self._done.set()

    def _observe(self, event: Transcript) -> None:
        sent_at = self._log.sent_at(event.start + event.duration)
        if sent_at is None:
            return
        if self._awaiting_first:
            self._observer.observe_first_result("stt", self._name, self._clock.now() - sent_at)
            self._awaiting_first = False
        if event.is_final:
            self._observer.observe_latency("stt", self._name, self._clock.now() - sent_at)
            self._awaiting_first = event.speech_final

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._keepalive.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._keepalive
        if not self._ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                await self._ws.send_str(CLOSE_STREAM)
            # The server flushes its last results and Metadata, then closes; the events() reader sees it.
            # Nobody needs those results once the call is over, so the wait is short.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), timeout=self._close_wait_s)
        await self._ws.close()

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._ws.closed:
            idle = loop.time() - self._last_send
            if idle >= self._keepalive_s:
                try:
                    await self._ws.send_str(KEEP_ALIVE)
                except (aiohttp.ClientError, ConnectionError, RuntimeError):
                    return
                self._last_send = loop.time()
                idle = 0.0
            await asyncio.sleep(self._keepalive_s - idle)


class DeepgramSpeechToText:
    def __init__(
        self,
        config: DeepgramSttConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Clock,
        observer: ProviderObserver,
    ) -> None:
        self.name = "deepgram"
        self._config = config
        self._session = session
        self._clock = clock
        self._observer = observer

    async def open_stream(self, audio_format: AudioFormat, *, call_id: str) -> DeepgramSttStream:
        try:
            # bounded: a stalled handshake must cost seconds, then the next provider (or the call) is tried
            async with asyncio.timeout(self._config.open_timeout_s):
                ws = await self._session.ws_connect(
                    listen_url(self._config, audio_format),
                    headers={"Authorization": f"Token {self._config.api_key}"},
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    autoping=True,
                )
        except aiohttp.WSServerHandshakeError as error:
            self._observer.count_error("stt", self.name, f"http_{error.status}")
            raise ProviderError(
                "stt", self.name, f"handshake refused: {error.status}", status=error.status
            ) from error
        except TimeoutError as error:
            self._observer.count_error("stt", self.name, "timeout")
            raise ProviderError("stt", self.name, "timeout: the websocket did not open") from error
        except (aiohttp.ClientError, OSError) as error:
            self._observer.count_error("stt", self.name, "connect")
            raise ProviderError("stt", self.name, f"cannot connect: {error!r}") from error
        return DeepgramSttStream(
            ws,
            name=self.name,
            audio_format=audio_format,
            keepalive_s=self._config.keepalive_s,
            clock=self._clock,
            observer=self._observer,
        )
