"""Text-to-speech over HTTP streaming: ElevenLabs (``/v1/text-to-speech/{voice}/stream``) and Deepgram Aura
(``POST /v1/speak``), per providers.md. Both answer raw audio bytes, chunked, in the format asked for.

"Time to first byte" is measured from sending the request to the first audio byte.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from harness.audio.formats import AudioFormat, elevenlabs_output_format
from harness.clock import Clock
from reference_runtime.config import DeepgramTtsConfig, ElevenLabsTtsConfig
from reference_runtime.providers.base import ProviderError, ProviderObserver


async def _stream_audio(
    session: aiohttp.ClientSession,
    url: str,
    *,
    name: str,
    headers: dict[str, str],
    body: dict[str, Any],
    timeout_s: float,
    clock: Clock,
    observer: ProviderObserver,
) -> AsyncIterator[bytes]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
    started = clock.now()
    first = True
    try:
        async with session.post(url, json=body, headers=headers, timeout=timeout) as response:
            if response.status != 200:
                detail = (await response.content.read(2000)).decode("utf-8", "replace")
                observer.count_error("tts", name, f"http_{response.status}")
                raise ProviderError("tts", name, f"HTTP {response.status}: {detail}", status=response.status)
            async for chunk in response.content.iter_any():
                if not chunk:
                    continue
                if first:
                    first = False
                    observer.observe_latency("tts", name, clock.now() - started)
                yield chunk
    except (aiohttp.ClientError, TimeoutError) as error:
        reason = "timeout" if isinstance(error, TimeoutError) else "transport"
        observer.count_error("tts", name, reason)
        raise ProviderError("tts", name, f"{reason}: {error!r}") from error


class _HttpTextToSpeech:
    """One streamed POST per sentence; the subclasses say where to, with which headers and body."""

    name = ""

    def __init__(
        self,
        config: ElevenLabsTtsConfig | DeepgramTtsConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Clock,
        observer: ProviderObserver,
    ) -> None:
        self._config = config
        self._session = session
        self._clock = clock
        self._observer = observer

    def url(self, audio_format: AudioFormat) -> str:
        raise NotImplementedError

    def _request(self, text: str) -> tuple[dict[str, str], dict[str, Any]]:
        raise NotImplementedError

    def synthesize(self, text: str, audio_format: AudioFormat) -> AsyncIterator[bytes]:
        headers, body = self._request(text)
        return _stream_audio(
            self._session,
            self.url(audio_format),
            name=self.name,
            headers=headers,
            body=body,
            timeout_s=self._config.timeout_s,
            clock=self._clock,
            observer=self._observer,
        )


class ElevenLabsTextToSpeech(_HttpTextToSpeech):
    name = "elevenlabs"
    _config: ElevenLabsTtsConfig

    def url(self, audio_format: AudioFormat) -> str:
        base = self._config.base_url.rstrip("/")
        return (
            f"{base}/v1/text-to-speech/{self._config.voice_id}/stream"
            f"?output_format={elevenlabs_output_format(audio_format)}"
        )

    def _request(self, text: str) -> tuple[dict[str, str], dict[str, Any]]:
        return {"xi-api-key": self._config.api_key}, {"text": text, "model_id": self._config.model}


class DeepgramTextToSpeech(_HttpTextToSpeech):
    name = "deepgram-aura"
    _config: DeepgramTtsConfig

    def url(self, audio_format: AudioFormat) -> str:
        base = self._config.base_url.rstrip("/")
        return (
            f"{base}/v1/speak?model={self._config.model}&encoding={audio_format.encoding}"
            f"&sample_rate={audio_format.sample_rate}&container=none"
        )

    def _request(self, text: str) -> tuple[dict[str, str], dict[str, Any]]:
        return {"Authorization": f"Token {self._config.api_key}"}, {"text": text}
