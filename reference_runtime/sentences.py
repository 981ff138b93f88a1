"""Streaming sentence splitting for LLM output, sans-I/O.

TTS is asked sentence by sentence so the first audio plays while the LLM still writes the rest. A sentence
ends at ``.``, ``!``, ``?`` or ``…`` (optionally followed by closing quotes/brackets) when whitespace follows,
or at a newline. A period after a common abbreviation ("Dr.", "e.g.") or a single initial ("J.") does not end
a sentence, and "3.5" has no whitespace after its period so it never splits.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "no",
        "approx",
        "appt",
        "dept",
    }
)
_BOUNDARY = re.compile(r"""([.!?…]+["')\]]*)(\s+)|(\n+)""")


class SentenceSplitter:
    def __init__(self, *, min_chars: int = 2) -> None:
        self._buffer = ""
        self._min_chars = min_chars

    def push(self, text: str) -> list[str]:
        """Add streamed text; returns the sentences it completed (stripped, in order)."""
        self._buffer += text
        sentences: list[str] = []
        start = 0
        for match in _BOUNDARY.finditer(self._buffer):
            if match.group(1) is not None:
                candidate = self._buffer[start : match.end(1)]
                if match.group(1).startswith(".") and self._is_abbreviation(
                    candidate[: -len(match.group(1))]
                ):
                    continue
            else:
                candidate = self._buffer[start : match.start()]
            if len(candidate.strip()) < self._min_chars:
                continue
            sentences.append(candidate.strip())
            start = match.end()
        self._buffer = self._buffer[start:]
        return sentences

    def flush(self) -> str | None:
        """End of stream: whatever is left is the last sentence."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None

    @staticmethod
    def _is_abbreviation(before_period: str) -> bool:
        words = before_period.split()
        if not words:
            return False
        word = words[-1].lstrip("(\"'")
        if word.lower() in _ABBREVIATIONS:
            return True
        # a single capital initial ("J. Smith"), but not the pronoun "I"
        return len(word) == 1 and word.isupper() and word != "I"


def split_sentences(text: str) -> list[str]:
    """Split a whole text (convenience for tests and for non-streamed replies)."""
    splitter = SentenceSplitter()
    sentences = splitter.push(text)
    last = splitter.flush()
    return [*sentences, last] if last else sentences
