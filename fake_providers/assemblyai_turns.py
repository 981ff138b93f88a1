"""AssemblyAI Universal-Streaming (v3), the sans-I/O core: audio and control messages in, AssemblyAI messages out.

The protocol facts (AssemblyAI docs: "Streaming API" reference, "Message Sequence", "Common session errors and
closures"):

- ``GET wss://host/v3/ws?sample_rate=<Hz>&encoding=pcm_s16le|pcm_mulaw&format_turns=true|false
  &min_end_of_turn_silence_when_confident=<ms>&max_turn_silence=<ms>&end_of_turn_confidence_threshold=<0..1>
  &speech_model=...&inactivity_timeout=<s>``; the API key in the ``Authorization`` header (the raw key, no
  scheme) or a temporary token in the ``token`` query parameter.
- Server, on open: ``{"type": "Begin", "id", "expires_at"}``.
- Client: binary frames of raw audio, each 50 to 1000 ms long (else ``Error`` 3007 "Input duration violation"
  and close 3007); text ``{"type": "ForceEndpoint"}`` (end the current turn now), ``{"type": "KeepAlive"}``,
  ``{"type": "UpdateConfiguration", ...}``, ``{"type": "Terminate"}`` (the server sends what is pending, then
  ``{"type": "Termination", "audio_duration_seconds", "session_duration_seconds"}`` and closes 1000). Anything
  else: ``Error`` 3006 "Invalid Message" and close 3006.
- Server: ``Turn`` messages ``{"type": "Turn", "turn_order", "turn_is_formatted", "end_of_turn", "transcript",
  "end_of_turn_confidence", "words": [{"start", "end" (ms), "text", "confidence", "word_is_final"}],
  "utterance"}``: partials (``end_of_turn: false``) while the caller speaks, then the end of turn (``end_of_turn:
  true``, unformatted: lower case, no punctuation) and, with ``format_turns=true``, the same turn again formatted
  (``turn_is_formatted: true``). ``turn_order`` counts turns from 0.
- Errors are in-band: an ``{"type": "Error", "error_code", "error"}`` frame, then a close with that code (a
  missing key: 1008 "Unauthorized Connection: Missing Authorization header").

The transcript is what the phrase codec (``harness.audio.phrase_codec``) hears in the audio, read in the encoding
and rate the client declared, as the fake Deepgram does: a client that declares ``pcm_s16le`` and sends μ-law
gets no turn at all (AssemblyAI finds no words in noise). The end of turn is due
``min_end_of_turn_silence_when_confident`` ms after the audio that ended the phrase arrived, plus ``ttfb``;
partials come ``chunk_interval`` after the audio that produced them, at most one per ``interim_every_s``.
"""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fake_providers.gate import Plan
from fake_providers.http import integral
from fake_providers.outbox import Action, Emit, Shut
from harness.audio.formats import AudioFormat, from_bytes
from harness.audio.phrase_codec import DecodedPhrase, PhraseDecoder, PhraseEvent, PhraseProgress

#: AssemblyAI's close codes ("Common session errors and closures")
CLOSE_UNAUTHORIZED = 1008
CLOSE_INVALID_MESSAGE = 3006
CLOSE_INPUT_DURATION = 3007
#: the chunk durations AssemblyAI accepts, in seconds
MIN_CHUNK_S = 0.05
MAX_CHUNK_S = 1.0
#: a decoded phrase is certain (the codec's CRC); real models report ~0.9 per word
WORD_CONFIDENCE = 0.95
SESSION_LIFETIME_S = 3 * 3600

_ENCODINGS: dict[str, Literal["linear16", "mulaw"]] = {"pcm_s16le": "linear16", "pcm_mulaw": "mulaw"}


class StreamingOptions(BaseModel):
    """The ``/v3/ws`` query parameters the fake reads (others are accepted and ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sample_rate: int = Field(gt=0)
    encoding: Literal["pcm_s16le", "pcm_mulaw"] = "pcm_s16le"
    format_turns: bool = False
    end_of_turn_confidence_threshold: float = Field(default=0.4, ge=0, le=1)
    min_end_of_turn_silence_when_confident: int = Field(default=400, ge=0)
    max_turn_silence: int = Field(default=1280, ge=0)
    speech_model: str = "universal-streaming-english"
    inactivity_timeout: int | None = Field(default=None, ge=5, le=3600)

    @field_validator("sample_rate", "min_end_of_turn_silence_when_confident", "max_turn_silence", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        return integral(value)

    @property
    def audio_format(self) -> AudioFormat:
        return AudioFormat(_ENCODINGS[self.encoding], self.sample_rate)


_PUNCTUATION = re.compile(r"[^\w' ]+")


def unformatted(text: str) -> str:
    """An unformatted turn's transcript: lower case, without punctuation."""
    return " ".join(_PUNCTUATION.sub("", text).lower().split())


def error_actions(now: float, code: int, message: str) -> list[Action]:
    """An in-band error: the ``Error`` frame, then the close with the same code."""
    return [Emit(now, {"type": "Error", "error_code": code, "error": message}), Shut(now, code, message[:120])]


class TurnSession:
    """One ``/v3/ws`` socket. Feed it what the client sent; it returns the actions to take."""

    def __init__(
        self,
        options: StreamingOptions,
        *,
        session_id: str,
        plan: Plan,
        now: float,
        wall_now: float,
        interim_every_s: float = 0.3,
        enforce_chunk_duration: bool = True,
    ) -> None:
        self.options = options
        self.session_id = session_id
        self._fmt = options.audio_format
        self._plan = plan
        self._interim_every_s = interim_every_s
        self._enforce_chunk_duration = enforce_chunk_duration
        self._decoder = PhraseDecoder(options.sample_rate, progress=True)
        self._carry = b""
        self._samples = 0
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=3000)
        self._not_before = now
        self._opened_at = now
        self._expires_at = int(wall_now) + SESSION_LIFETIME_S
        self._turn_order = 0
        self._last_partial_end = -1.0
        self.closed = False

    def opened(self, now: float) -> list[Action]:
        return [self._emit(now, {"type": "Begin", "id": self.session_id, "expires_at": self._expires_at})]

    @property
    def audio_seconds(self) -> float:
        return self._samples / self._fmt.sample_rate

    # -- client messages -------------------------------------------------------------------------------------

    def receive_binary(self, data: bytes, now: float) -> list[Action]:
        duration = len(data) / self._fmt.bytes_per_second
        if self._enforce_chunk_duration and not MIN_CHUNK_S - 1e-9 <= duration <= MAX_CHUNK_S + 1e-9:
            self.closed = True
            message = f"Input duration violation: {duration * 1000:.0f} ms. Expected between 50 and 1000 ms"
            return error_actions(max(now, self._not_before), CLOSE_INPUT_DURATION, message)
        data = self._carry + data
        usable = len(data) - len(data) % self._fmt.bytes_per_sample
        self._carry = data[usable:]
        samples = from_bytes(data[:usable], self._fmt)
        self._samples += len(samples)
        self._arrivals.append((self.audio_seconds, now))
        return self._on_events(self._decoder.feed(samples), now, forced=False)

    def receive_text(self, text: str, now: float) -> list[Action]:
        try:
            message = json.loads(text)
            kind = message.get("type") if isinstance(message, dict) else None
        except ValueError:
            self.closed = True
            return error_actions(max(now, self._not_before), CLOSE_INVALID_MESSAGE, f"Invalid JSON: {text[:60]}")
        if kind in ("KeepAlive", "UpdateConfiguration"):
            return []
        if kind == "ForceEndpoint":
            return self._on_events(self._decoder.flush(), now, forced=True)
        if kind == "Terminate":
            return self._terminate(now)
        self.closed = True
        return error_actions(max(now, self._not_before), CLOSE_INVALID_MESSAGE, f"Invalid Message Type: {kind}")

    def idle_timeout(self, now: float) -> list[Action]:
        """``inactivity_timeout`` seconds without a message: the session ends as if terminated."""
        return self._terminate(now)

    def _terminate(self, now: float) -> list[Action]:
        actions = self._on_events(self._decoder.flush(), now, forced=True)
        termination = {
            "type": "Termination",
            "audio_duration_seconds": round(self.audio_seconds),
            "session_duration_seconds": round(max(0.0, now - self._opened_at)),
        }
        actions.append(self._emit(now, termination))
        actions.append(Shut(self._not_before, 1000, ""))
        self.closed = True
        return actions

    # -- decoder events -> turns -----------------------------------------------------------------------------

    def _on_events(self, events: list[PhraseEvent], now: float, *, forced: bool) -> list[Action]:
        actions: list[Action] = []
        for event in events:
            if isinstance(event, PhraseProgress):
                text = unformatted(event.text_so_far)
                if text and event.end - self._last_partial_end >= self._interim_every_s:
                    self._last_partial_end = event.end
                    turn = self._turn(text, event.start, event.end, end_of_turn=False, formatted=False)
                    actions.append(self._emit(now + self._plan.interval(), turn))
                continue
            self._last_partial_end = -1.0
            if not isinstance(event, DecodedPhrase):
                continue  # noise: AssemblyAI finds no words in it, so no turn
            ended_at = self._arrival_of(event.end)
            silence = 0.0 if forced else self.options.min_end_of_turn_silence_when_confident / 1000
            due = max(now, ended_at + silence) + self._plan.first_byte()
            plain = self._turn(unformatted(event.text), event.start, event.end, end_of_turn=True, formatted=False)
            actions.append(self._emit(due, plain))
            if self.options.format_turns:
                formatted = self._turn(event.text, event.start, event.end, end_of_turn=True, formatted=True)
                actions.append(self._emit(due + self._plan.interval(), formatted))
            self._turn_order += 1
        return actions

    def _arrival_of(self, audio_time: float) -> float:
        while len(self._arrivals) > 1 and self._arrivals[0][0] < audio_time:
            self._arrivals.popleft()
        return self._arrivals[0][1] if self._arrivals else self._not_before

    def _emit(self, due: float, frame: dict[str, Any]) -> Emit:
        self._not_before = max(self._not_before, due)
        return Emit(self._not_before, frame)

    def _turn(self, text: str, start: float, end: float, *, end_of_turn: bool, formatted: bool) -> dict[str, Any]:
        words = _words(text, start, end, final=end_of_turn)
        return {
            "type": "Turn",
            "turn_order": self._turn_order,
            "turn_is_formatted": formatted,
            "end_of_turn": end_of_turn,
            "transcript": text,
            "end_of_turn_confidence": 0.9 if end_of_turn else 0.05,
            "words": words,
            "utterance": text if end_of_turn else "",
        }


def _words(text: str, start: float, end: float, *, final: bool) -> list[dict[str, Any]]:
    """Word objects spread evenly over the phrase, times in ms; in a partial the last word is not final yet."""
    tokens = text.split()
    if not tokens:
        return []
    step = (end - start) / len(tokens)
    return [
        {
            "start": round((start + i * step) * 1000),
            "end": round((start + (i + 1) * step) * 1000),
            "text": token,
            "confidence": WORD_CONFIDENCE,
            "word_is_final": final or i < len(tokens) - 1,
        }
        for i, token in enumerate(tokens)
    ]
