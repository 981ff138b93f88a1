"""Deepgram Aura text-to-speech, the sans-I/O core of the ``/v1/speak`` websocket (and the REST request
options).

Implements shared/protocols/providers.md, "Deepgram Aura text-to-speech". ``Speak`` messages add text to a
buffer; ``Flush`` synthesises the buffer as one phrase and streams it as binary frames (first byte ``ttfb``
after the Flush, or after the previous flush's audio; then one chunk per ``chunk_interval``), followed by
``Flushed{sequence_id}``. ``Clear`` drops the buffer and every frame not yet sent and answers
``Cleared{sequence_id}``; ``Close`` closes the socket (1000) once the audio already flushed has been sent.
``Metadata`` is the first message on a new socket.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fake_providers.audio import PhraseVoice, split_audio
from fake_providers.gate import Plan
from fake_providers.http import integral
from fake_providers.outbox import Action, Discard, Emit, Shut
from harness.audio.formats import AudioFormat

_DEFAULT_RATES = {"linear16": 24000, "mulaw": 8000, "alaw": 8000}
_AUDIO = "audio"


class SpeakOptions(BaseModel):
    """The ``/v1/speak`` query parameters (REST and websocket). Only raw encodings are spoken by the fake."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = "aura-2-thalia-en"
    encoding: Literal["linear16", "mulaw", "alaw"] = "linear16"
    sample_rate: int | None = Field(default=None, gt=0)
    container: Literal["none", "wav"] | None = None

    @field_validator("sample_rate", mode="before")
    @classmethod
    def _integral_rate(cls, value: Any) -> Any:
        return integral(value)

    @property
    def audio_format(self) -> AudioFormat:
        return AudioFormat(self.encoding, self.sample_rate or _DEFAULT_RATES[self.encoding])


class SpeakSession:
    """One Aura websocket: text and control messages in, audio frames and acknowledgements out."""

    def __init__(
        self,
        options: SpeakOptions,
        *,
        voice: PhraseVoice,
        plan: Plan,
        chunk_ms: int,
        request_id: str,
        model_uuid: str,
        now: float,
    ) -> None:
        self.options = options
        self._fmt = options.audio_format
        self._voice = voice
        self._plan = plan
        self._chunk_ms = chunk_ms
        self._request_id = request_id
        self._model_uuid = model_uuid
        self._buffer: list[str] = []
        self._sequence = 0
        self._not_before = now
        self.closed = False

    def opened(self, now: float) -> list[Action]:
        metadata = {
            "type": "Metadata",
            "request_id": self._request_id,
            "model_name": self.options.model,
            "model_version": "voicechaos-fake",
            "model_uuid": self._model_uuid,
        }
        return [Emit(now, metadata)]

    def receive_text(self, text: str, now: float) -> list[Action]:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "Speak" and isinstance(message, dict) and isinstance(message.get("text"), str):
            self._buffer.append(message["text"])
            return []
        if kind == "Flush":
            return self._flush(now)
        if kind == "Clear":
            self._buffer.clear()
            self._not_before = now
            return [Discard(_AUDIO), Emit(now, {"type": "Cleared", "sequence_id": self._sequence})]
        if kind == "Close":
            self.closed = True
            return [Shut(max(now, self._not_before))]
        return [Emit(max(now, self._not_before), _warning(f"Unknown or malformed message: {text[:200]}"))]

    def receive_binary(self, data: bytes, now: float) -> list[Action]:
        return [Emit(max(now, self._not_before), _warning("Binary messages are not expected on /v1/speak"))]

    def idle_timeout(self, now: float) -> list[Action]:
        self.closed = True
        return [Shut(max(now, self._not_before))]

    def _flush(self, now: float) -> list[Action]:
        text = "".join(self._buffer).strip()
        self._buffer.clear()
        chunks = split_audio(self._voice.render(text, self._fmt), self._fmt, self._chunk_ms)
        dues = self._plan.schedule(max(now, self._not_before), len(chunks))
        actions: list[Action] = [Emit(due, chunk, _AUDIO) for due, chunk in zip(dues, chunks, strict=True)]
        self._not_before = dues[-1] if dues else max(now, self._not_before)
        actions.append(Emit(self._not_before, {"type": "Flushed", "sequence_id": self._sequence}, _AUDIO))
        self._sequence += 1
        return actions


def _warning(description: str) -> dict[str, Any]:
    return {"type": "Warning", "description": description, "code": "UNKNOWN_MESSAGE"}
