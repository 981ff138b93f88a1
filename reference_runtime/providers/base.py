"""The provider seams: one small interface per kind of provider (speech-to-text, language model,
text-to-speech).

The call only ever talks to these protocols, so the safeguards issue can wrap them (a circuit breaker per
provider, an ordered fallback chain) without touching the call. Contracts every implementation keeps:

- Failures surface as :class:`ProviderError` (never swallowed, never a bare ``aiohttp`` exception), raised
  from the awaited method or from the iterator being consumed. ``asyncio.CancelledError`` is not a failure: a
  barge-in cancels in-flight work, and an implementation must then release its connection at once.
- Each implementation reports its own latency and errors to the :class:`ProviderObserver` it was built with,
  under its own ``name``, so a fallback chain's metrics still say which provider was slow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from harness.audio.formats import AudioFormat
from reference_runtime.dialog import LlmReply, LlmRequest

Service = Literal["stt", "llm", "tts"]


class ProviderError(Exception):
    """A provider failed: refused (HTTP status), broke mid-stream, or timed out."""

    def __init__(self, service: Service, provider: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"{service}/{provider}: {reason}")
        self.service = service
        self.provider = provider
        self.reason = reason
        self.status = status


class ProviderObserver(Protocol):
    """Where providers report what production dashboards need (implemented by the runtime's metrics)."""

    def observe_latency(self, service: Service, provider: str, seconds: float) -> None:
        """STT: audio sent -> the final covering it; LLM: request -> first token; TTS: request -> first byte."""
        ...

    def observe_first_result(self, service: Service, provider: str, seconds: float) -> None:
        """STT: audio sent -> the first result with words of an utterance (an interim, usually)."""
        ...

    def count_error(self, service: Service, provider: str, reason: str) -> None: ...


class NullObserver:
    def observe_latency(self, service: Service, provider: str, seconds: float) -> None:
        return None

    def observe_first_result(self, service: Service, provider: str, seconds: float) -> None:
        return None

    def count_error(self, service: Service, provider: str, reason: str) -> None:
        return None


# --- speech-to-text -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    is_final: bool
    speech_final: bool
    start: float
    duration: float


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    last_word_end: float


SttEvent = Transcript | UtteranceEnd


class SttStream(Protocol):
    """One live transcription session, one per call."""

    async def send_audio(self, audio: bytes) -> None:
        """Audio in the format the stream was opened with. Raises ProviderError if the stream is gone."""
        ...

    def events(self) -> AsyncIterator[SttEvent]:
        """Transcripts as they come; ends when the stream is closed by :meth:`close`, raises ProviderError if
        the provider drops it."""
        ...

    async def close(self) -> None:
        """End of call: flush what was sent, then release the connection. Idempotent."""
        ...


class SpeechToText(Protocol):
    name: str

    async def open_stream(self, audio_format: AudioFormat, *, call_id: str) -> SttStream: ...


# --- language model -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReplyDone:
    reply: LlmReply


LlmChunk = TextDelta | ReplyDone


class LanguageModel(Protocol):
    name: str

    def stream(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
        """Text deltas as they stream, then exactly one :class:`ReplyDone` with the whole text and tool
        calls."""
        ...


# --- text-to-speech -----------------------------------------------------------------------------------------


class TextToSpeech(Protocol):
    name: str

    def synthesize(self, text: str, audio_format: AudioFormat) -> AsyncIterator[bytes]:
        """Raw audio in ``audio_format`` as it streams (chunks of any size, possibly splitting a sample)."""
        ...


@dataclass(frozen=True, slots=True)
class Providers:
    """The three providers a call uses; the composition root builds them (or a test injects its own)."""

    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech
