"""End of the caller's turn, from Deepgram's live results, sans-I/O.

Deepgram sends interim results (``is_final: false``), final results for stretches of audio (``is_final:
true``), and marks the end of an utterance with ``speech_final: true`` (after ``endpointing`` ms of silence)
or, when noise keeps ``speech_final`` from firing, with an ``UtteranceEnd`` message (after
``utterance_end_ms`` without words). The turn's text is the concatenation of the final results since the
previous turn ended.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallerTurn:
    text: str
    audio_end_s: float
    """end of the turn's last word in the STT stream's audio time (``start + duration`` of its last final
    result)"""


class Endpointer:
    def __init__(self) -> None:
        self._finals: list[str] = []
        self._audio_end_s = 0.0
        self.heard_interim = False

    def transcript(
        self, text: str, *, is_final: bool, speech_final: bool, start: float = 0.0, duration: float = 0.0
    ) -> CallerTurn | None:
        text = text.strip()
        if not is_final:
            self.heard_interim = self.heard_interim or bool(text)
            return None
        if text:
            self._finals.append(text)
            self._audio_end_s = start + duration
        return self._take() if speech_final else None

    def utterance_end(self) -> CallerTurn | None:
        return self._take()

    def _take(self) -> CallerTurn | None:
        self.heard_interim = False
        if not self._finals:
            return None
        turn = CallerTurn(" ".join(self._finals), self._audio_end_s)
        self._finals = []
        return turn
