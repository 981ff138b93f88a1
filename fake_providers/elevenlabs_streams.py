"""ElevenLabs text-to-speech streams, the sans-I/O core: the two input-streaming websockets and the alignment
every ElevenLabs audio response carries.

Implements shared/protocols/providers.md, "ElevenLabs text-to-speech":

- ``stream-input``: one implicit context. The first message is ``{"text": " ", ...}``; text chunks follow; a
  chunk with ``flush: true`` generates what is buffered; ``{"text": ""}`` ends the input: the rest is
  generated, then ``{"isFinal": true}`` is sent and the socket closes (1000).
- ``multi-stream-input``: every message carries ``context_id``. A context starts with its first message;
  ``flush`` generates its buffer; ``{"text": ""}`` only keeps it alive; ``close_context`` drops what was not
  flushed and answers ``{"contextId", "isFinal": true}`` after the audio already generated for it;
  ``close_socket`` does that for every context, then closes (1000).

Text is buffered per context and generated as one phrase when flushed, at the end of input, or when the buffer
holds a finished sentence (``. ``, ``! ``, ``? ``): the sentences are generated and the unfinished rest waits.
With ``auto_mode=true`` every text message is generated at once (ElevenLabs' auto mode does not wait for more
text). Audio messages are ``{"audio": <base64>, "alignment", "normalizedAlignment"}`` (plus ``contextId`` on
multi-stream-input); the alignment lists the characters that start in that chunk, in ms from the chunk's
start. Generation is sequential per socket: a phrase's first chunk is due ``ttfb`` after its text was complete
(or after the previous phrase's last chunk), the next ones one ``chunk_interval`` apart.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from fake_providers.audio import CharTiming, PhraseVoice, chars_in, even_alignment, split_audio
from fake_providers.gate import Plan
from fake_providers.outbox import Action, Emit, Shut
from harness.audio.formats import AudioFormat

#: the context a multi-stream-input message without ``context_id`` belongs to
DEFAULT_CONTEXT = "default"
#: the last sentence end in a buffer: punctuation followed by whitespace
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s")


@dataclass(frozen=True, slots=True)
class Chunk:
    """A chunk of generated audio and the characters that start in it (times from the phrase's start)."""

    audio: bytes
    start: float
    chars: list[CharTiming]


def phrase_chunks(voice: PhraseVoice, text: str, fmt: AudioFormat, chunk_ms: int) -> list[Chunk]:
    """The audio of ``text`` cut into chunks, each with the characters spoken in it (spread evenly)."""
    audio = voice.render(text, fmt)
    pieces = split_audio(audio, fmt, chunk_ms)
    alignment = even_alignment(text, fmt.duration(len(audio)))
    chunks = []
    at = 0.0
    for i, piece in enumerate(pieces):
        end = at + fmt.duration(len(piece))
        chunks.append(Chunk(piece, at, chars_in(alignment, at, end, last=i == len(pieces) - 1)))
        at = end
    return chunks


def ws_alignment(chunk: Chunk) -> dict[str, Any] | None:
    """The websocket form: ``chars``, ``charStartTimesMs``, ``charDurationsMs``, from the chunk's start."""
    if not chunk.chars:
        return None
    return {
        "chars": [c.char for c in chunk.chars],
        "charStartTimesMs": [round((c.start - chunk.start) * 1000) for c in chunk.chars],
        "charDurationsMs": [round((c.end - c.start) * 1000) for c in chunk.chars],
    }


def http_alignment(chunk: Chunk) -> dict[str, Any] | None:
    """The HTTP ``with-timestamps`` form: seconds from the start of the response's audio."""
    if not chunk.chars:
        return None
    return {
        "characters": [c.char for c in chunk.chars],
        "character_start_times_seconds": [round(c.start, 3) for c in chunk.chars],
        "character_end_times_seconds": [round(c.end, 3) for c in chunk.chars],
    }


@dataclass
class _Context:
    buffer: str = ""


class InputStreamSession:
    """One ``stream-input`` (``multi=False``) or ``multi-stream-input`` (``multi=True``) socket."""

    def __init__(
        self,
        *,
        multi: bool,
        fmt: AudioFormat,
        voice: PhraseVoice,
        plan: Plan,
        chunk_ms: int,
        auto_mode: bool,
        authorized: bool,
        inactivity_timeout_s: float,
        now: float,
    ) -> None:
        self.multi = multi
        self._fmt = fmt
        self._voice = voice
        self._plan = plan
        self._chunk_ms = chunk_ms
        self._auto_mode = auto_mode
        self._authorized = authorized
        self._inactivity_timeout_s = inactivity_timeout_s
        self._contexts: dict[str, _Context] = {}
        self._not_before = now
        self.closed = False

    def receive_text(self, text: str, now: float) -> list[Action]:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            return self._fail(now, 1008, "Invalid message: expected a JSON object")
        if not self._authorized:
            if not (message.get("xi_api_key") or message.get("xi-api-key") or message.get("authorization")):
                return self._fail(
                    now, 1008, "Unauthorized: no xi-api-key in the headers or the first message"
                )
            self._authorized = True
        if self.multi:
            return self._multi(message, now)
        return self._single(message, now)

    def receive_binary(self, data: bytes, now: float) -> list[Action]:
        return self._fail(now, 1008, "Invalid message: expected a JSON text message")

    def idle_timeout(self, now: float) -> list[Action]:
        """No message within the socket's inactivity timeout: ElevenLabs closes it."""
        timeout = self._inactivity_timeout_s
        return self._fail(now, 1008, f"Have not received a new text input within the timeout of {timeout:g}s")

    # -- the two flavours ------------------------------------------------------------------------------------

    def _single(self, message: dict[str, Any], now: float) -> list[Action]:
        context = self._contexts.setdefault(DEFAULT_CONTEXT, _Context())
        text = message.get("text")
        if text == "":  # end of input
            actions = self._generate(DEFAULT_CONTEXT, context, context.buffer, now)
            final = {"audio": None, "isFinal": True, "alignment": None, "normalizedAlignment": None}
            actions.append(self._emit(now, final))
            actions.append(Shut(self._not_before))
            self.closed = True
            return actions
        if isinstance(text, str):
            context.buffer += text
        return self._after_text(DEFAULT_CONTEXT, context, message, now)

    def _multi(self, message: dict[str, Any], now: float) -> list[Action]:
        if message.get("close_socket"):
            actions: list[Action] = []
            for context_id in list(self._contexts):
                actions += self._close_context(context_id, now)
            actions.append(Shut(max(now, self._not_before)))
            self.closed = True
            return actions
        context_id = str(message.get("context_id") or DEFAULT_CONTEXT)
        if message.get("close_context"):
            return self._close_context(context_id, now)
        text = message.get("text")
        if text == "" and not message.get("flush"):
            return []  # keep-alive (of the connection, or of one context)
        context = self._contexts.setdefault(context_id, _Context())
        if isinstance(text, str):
            context.buffer += text
        return self._after_text(context_id, context, message, now)

    def _after_text(
        self, context_id: str, context: _Context, message: dict[str, Any], now: float
    ) -> list[Action]:
        if message.get("flush") or self._auto_mode:
            return self._generate(context_id, context, context.buffer, now)
        ends = list(_SENTENCE_END.finditer(context.buffer))
        if not ends:
            return []
        return self._generate(context_id, context, context.buffer[: ends[-1].end()], now)

    def _close_context(self, context_id: str, now: float) -> list[Action]:
        self._contexts.pop(context_id, None)
        return [self._emit(now, {"contextId": context_id, "isFinal": True})]

    # -- generation ------------------------------------------------------------------------------------------

    def _generate(self, context_id: str, context: _Context, text: str, now: float) -> list[Action]:
        """Generate ``text``, a prefix of the context's buffer, as one phrase; the rest keeps waiting."""
        context.buffer = context.buffer[len(text) :]
        spoken = text.strip()
        if not spoken:
            return []
        chunks = phrase_chunks(self._voice, spoken, self._fmt, self._chunk_ms)
        dues = self._plan.schedule(max(now, self._not_before), len(chunks))
        actions: list[Action] = []
        for due, chunk in zip(dues, chunks, strict=True):
            alignment = ws_alignment(chunk)
            frame: dict[str, Any] = {
                "audio": base64.b64encode(chunk.audio).decode("ascii"),
                "alignment": alignment,
                "normalizedAlignment": alignment,
            }
            if self.multi:
                frame["contextId"] = context_id
            actions.append(self._emit(due, frame))
        return actions

    def _emit(self, due: float, frame: dict[str, Any]) -> Emit:
        self._not_before = max(self._not_before, due)
        return Emit(self._not_before, frame)

    def _fail(self, now: float, code: int, reason: str) -> list[Action]:
        self.closed = True
        error = self._emit(now, {"message": reason, "error": "policy_violation", "code": code})
        return [error, Shut(self._not_before, code, reason)]
