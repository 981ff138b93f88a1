"""Deepgram live speech-to-text, the sans-I/O core: audio and control messages in, Deepgram messages out.

Implements shared/protocols/providers.md, "Deepgram live speech-to-text". The transcript is what the phrase
codec hears in the audio, read in the encoding and rate the client declared, so a client that declares
linear16 and sends μ-law gets what Deepgram would give it: finals with an empty transcript.

Timing (all on the injected clock's timeline):

- interim ``Results`` (``interim_results=true``) follow the phrase as it is heard, at most one per
  ``interim_every_s`` of audio, each ``chunk_interval`` after the audio that produced it;
- the final (``is_final`` and ``speech_final``) is due ``endpointing`` ms after the audio that ended the
  phrase arrived (Deepgram's endpointing: silence that long ends the utterance), plus ``ttfb`` (processing
  latency); with ``endpointing=false`` it is due ``ttfb`` after the phrase was decoded, with ``speech_final:
  false``;
- ``UtteranceEnd`` (``utterance_end_ms``) is due that long after the phrase's end arrived, after its final;
- ``SpeechStarted`` (``vad_events=true``) is sent when the first symbols of a stretch of speech are heard.

As at Deepgram, a phrase is finalized by the audio that follows it (a phone line sends silence): a client that
sends a phrase and then nothing gets its final only from ``Finalize`` or ``CloseStream`` (at 16 kHz the
decoder's resampler holds back the last few milliseconds until more audio comes).

Control messages (Deepgram "Audio Keep Alive", "Finalize", "Close Stream"): ``KeepAlive`` does nothing but
count as traffic; ``Finalize`` flushes the decoder and answers with finals marked ``from_finalize`` (an empty
one if nothing was pending); ``CloseStream`` flushes, sends ``Metadata`` and closes with 1000, and so does an
empty binary frame (Deepgram's old end-of-audio signal). Ten seconds (configurable) with neither audio nor a
text message closes with 1011 ``NET-0001`` (Deepgram "STT Troubleshooting WebSocket, NET, and DATA Errors");
the adapter owns that timer and calls :meth:`ListenSession.idle_timeout`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fake_providers.gate import Plan
from fake_providers.http import integral
from fake_providers.outbox import Action, Emit, Shut
from harness.audio.formats import AudioFormat, from_bytes
from harness.audio.phrase_codec import (
    DecodedPhrase,
    PhraseDecoder,
    PhraseEvent,
    PhraseProgress,
    UndecodableAudio,
)

#: Deepgram's close frame when no audio or text message arrived within the timeout window.
IDLE_CLOSE_CODE = 1011
IDLE_CLOSE_REASON = "NET-0001"

#: the confidence of a decoded phrase (the codec's CRC makes a decoded text certain; real models report ~0.99)
DECODED_CONFIDENCE = 0.99


class ListenOptions(BaseModel):
    """The ``/v1/listen`` query parameters the fake understands (others are accepted and ignored, as
    Deepgram's unrelated features would be)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = "nova-3"
    encoding: Literal["linear16", "mulaw", "alaw"]
    sample_rate: int = Field(gt=0)
    channels: Literal[1] = 1
    interim_results: bool = False
    #: ms of silence that ends an utterance, or False to turn endpointing off (Deepgram's default is 10 ms)
    endpointing: int | Literal[False] = 10
    utterance_end_ms: int | None = Field(default=None, ge=0)
    vad_events: bool = False
    punctuate: bool = False
    smart_format: bool = False
    language: str = "en"

    @field_validator("sample_rate", "channels", mode="before")
    @classmethod
    def _integral_rate(cls, value: Any) -> Any:
        # query values arrive as strings ("channels=1", as Pipecat sends it)
        return integral(value)

    @field_validator("endpointing", mode="before")
    @classmethod
    def _endpointing(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered == "false":
                return False
            if lowered == "true":
                return 10
        return value

    @property
    def audio_format(self) -> AudioFormat:
        return AudioFormat(self.encoding, self.sample_rate)


class ListenSession:
    """One live transcription socket. Feed it what the client sent; it returns the actions to take."""

    def __init__(
        self,
        options: ListenOptions,
        *,
        request_id: str,
        model_uuid: str,
        created: str,
        plan: Plan,
        now: float,
        interim_every_s: float = 0.5,
        close_on_empty_frame: bool = True,
    ) -> None:
        self.options = options
        self.request_id = request_id
        self._fmt = options.audio_format
        self._model_uuid = model_uuid
        self._created = created
        self._plan = plan
        self._interim_every_s = interim_every_s
        self._close_on_empty_frame = close_on_empty_frame
        self._decoder = PhraseDecoder(options.sample_rate, progress=True)
        self._sha = hashlib.sha256()
        self._carry = b""  # an odd trailing byte of linear16, completed by the next frame
        self._samples = 0
        #: (audio seconds at the end of a frame, when that frame arrived): maps phrase ends to arrival times
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=3000)
        self._not_before = now
        self._speaking = False
        self._last_interim_end = -1.0
        self._finals = 0
        self.closed = False

    # -- client messages -------------------------------------------------------------------------------------

    def receive_binary(self, data: bytes, now: float) -> list[Action]:
        """Audio, in the encoding and rate the client declared."""
        if not data:
            # An empty binary frame is Deepgram's old end-of-audio signal (changelog 2022-10-17: "previously,
            # streaming connections were closed by sending an empty byte") and still closes the stream ("STT
            # Troubleshooting WebSocket, NET, and DATA Errors": an empty byte causes unexpected closures).
            if self._close_on_empty_frame:
                return self._close_stream(now, reason="empty binary frame: end of audio")
            return []
        self._sha.update(data)
        data = self._carry + data
        usable = len(data) - (len(data) % self._fmt.bytes_per_sample)
        self._carry = data[usable:]
        samples = from_bytes(data[:usable], self._fmt)
        self._samples += len(samples)
        self._arrivals.append((self.audio_seconds, now))
        return self._on_events(self._decoder.feed(samples), now, from_finalize=False)

    def receive_text(self, text: str, now: float) -> list[Action]:
        try:
            message = json.loads(text)
            kind = message.get("type") if isinstance(message, dict) else None
        except ValueError:
            kind = None
        if kind == "KeepAlive":
            return []
        if kind == "Finalize":
            return self._flush(now, from_finalize=True)
        if kind == "CloseStream":
            return self._close_stream(now)
        return [self._emit(now, self._error(text))]

    def _close_stream(self, now: float, reason: str = "") -> list[Action]:
        actions = self._flush(now, from_finalize=False)
        actions.append(self._emit(self._not_before, self._metadata()))
        actions.append(Shut(self._not_before, 1000, reason))
        self.closed = True
        return actions

    def idle_timeout(self, now: float) -> list[Action]:
        """Nothing arrived within the timeout window: close as Deepgram does."""
        self.closed = True
        return [Shut(max(now, self._not_before), IDLE_CLOSE_CODE, IDLE_CLOSE_REASON)]

    @property
    def audio_seconds(self) -> float:
        return self._samples / self._fmt.sample_rate

    # -- decoder events -> messages --------------------------------------------------------------------------

    def _flush(self, now: float, *, from_finalize: bool) -> list[Action]:
        finals_before = self._finals
        actions = self._on_events(self._decoder.flush(), now, from_finalize=from_finalize)
        if from_finalize and self._finals == finals_before:
            # Deepgram answers every Finalize with a final marked from_finalize, empty if nothing was pending.
            end = self.audio_seconds
            actions.append(
                self._emit(
                    now + self._plan.first_byte(), self._result("", end, end, final=True, finalize=True)
                )
            )
        return actions

    def _on_events(self, events: list[PhraseEvent], now: float, *, from_finalize: bool) -> list[Action]:
        actions: list[Action] = []
        for event in events:
            if self.options.vad_events and not self._speaking:
                actions.append(
                    self._emit(now, {"type": "SpeechStarted", "channel": [0, 1], "timestamp": event.start})
                )
            self._speaking = True
            if isinstance(event, PhraseProgress):
                if (
                    self.options.interim_results
                    and event.end - self._last_interim_end >= self._interim_every_s
                ):
                    self._last_interim_end = event.end
                    interim = self._result(event.text_so_far.strip(), event.start, event.end, final=False)
                    actions.append(self._emit(now + self._plan.interval(), interim))
                continue
            text = event.text if isinstance(event, DecodedPhrase) else ""
            actions += self._final(text, event, now, from_finalize=from_finalize)
            self._speaking = False
            self._last_interim_end = -1.0
        return actions

    def _final(
        self, text: str, event: DecodedPhrase | UndecodableAudio, now: float, *, from_finalize: bool
    ) -> list[Action]:
        endpointing = self.options.endpointing
        ended_at = self._arrival_of(event.end)
        if from_finalize or endpointing is False:
            due = now + self._plan.first_byte()
        else:
            due = max(now, ended_at + endpointing / 1000) + self._plan.first_byte()
        result = self._result(
            text,
            event.start,
            event.end,
            final=True,
            speech_final=endpointing is not False and not from_finalize,
            finalize=from_finalize,
        )
        self._finals += 1
        actions: list[Action] = [self._emit(due, result)]
        if self.options.utterance_end_ms is not None:
            utterance_end = {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": event.end}
            actions.append(
                self._emit(max(due, ended_at + self.options.utterance_end_ms / 1000), utterance_end)
            )
        return actions

    def _arrival_of(self, audio_time: float) -> float:
        """When the frame holding ``audio_time`` arrived (the oldest remembered one if it is older)."""
        while len(self._arrivals) > 1 and self._arrivals[0][0] < audio_time:
            self._arrivals.popleft()
        return self._arrivals[0][1] if self._arrivals else self._not_before

    def _emit(self, due: float, frame: dict[str, Any]) -> Emit:
        self._not_before = max(self._not_before, due)
        return Emit(self._not_before, frame)

    # -- message bodies (providers.md, "Server sends") -------------------------------------------------------

    def _result(
        self,
        transcript: str,
        start: float,
        end: float,
        *,
        final: bool,
        speech_final: bool = False,
        finalize: bool = False,
    ) -> dict[str, Any]:
        confidence = DECODED_CONFIDENCE if transcript else 0.0
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end - start, 3),
            "start": round(start, 3),
            "is_final": final,
            "speech_final": speech_final,
            "from_finalize": finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": transcript,
                        "confidence": confidence,
                        "words": _words(transcript, start, end),
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {
                    "name": self.options.model,
                    "version": "voicechaos-fake",
                    "arch": self.options.model,
                },
                "model_uuid": self._model_uuid,
            },
        }

    def _metadata(self) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self._sha.hexdigest(),
            "created": self._created,
            "duration": round(self.audio_seconds, 3),
            "channels": self.options.channels,
        }

    def _error(self, text: str) -> dict[str, Any]:
        return {
            "type": "Error",
            "variant": "SchemaError",
            "description": "Could not parse the text message: expected KeepAlive, Finalize or CloseStream.",
            "message": text[:200],
        }


_PUNCTUATION = re.compile(r"[^\w']+")


def _words(transcript: str, start: float, end: float) -> list[dict[str, Any]]:
    """Deepgram word objects spread evenly over the phrase; ``word`` is lowercase, without punctuation."""
    tokens = transcript.split()
    if not tokens:
        return []
    step = (end - start) / len(tokens)
    words = []
    for i, token in enumerate(tokens):
        words.append(
            {
                "word": _PUNCTUATION.sub("", token).lower() or token,
                "start": round(start + i * step, 3),
                "end": round(start + (i + 1) * step, 3),
                "confidence": DECODED_CONFIDENCE,
                "punctuated_word": token,
            }
        )
    return words
