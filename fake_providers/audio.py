"""How the fake TTS providers speak: phrase audio in the wire format the client asked for, cut into chunks.

Every fake TTS turns text into phrase audio (``harness.audio.phrase_codec``), so whatever hears it (a
simulated caller, a test) can decode the words back. The audio is encoded at the codec's own rate, resampled
to the requested rate and encoded in the requested format; a mismatch downstream then garbles it exactly as it
would in production.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from harness.audio.formats import AudioFormat, resample, to_bytes
from harness.audio.phrase_codec import CODEC_SAMPLE_RATE, encode_phrase, normalize_text


class PhraseVoice:
    """Text -> phrase audio bytes in a wire format; one per app, it remembers recent renderings."""

    def __init__(self, cache_size: int = 256) -> None:
        self._cache: OrderedDict[tuple[str, AudioFormat], bytes] = OrderedDict()
        self._cache_size = cache_size

    def render(self, text: str, fmt: AudioFormat) -> bytes:
        """The phrase audio of ``text`` in ``fmt``; empty when the text has no words to say."""
        key = (text, fmt)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        if not normalize_text(text):
            data = b""
        else:
            samples = resample(_phrases(text), CODEC_SAMPLE_RATE, fmt.sample_rate)
            data = to_bytes(samples, fmt)
        self._cache[key] = data
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return data


#: silence between the phrases of a text too long for one phrase (the codec needs at least 100 ms)
PHRASE_GAP_S = 0.15


def _phrases(text: str) -> np.ndarray:
    """Phrase audio at the codec's rate; a text too long for one phrase becomes several phrases."""
    try:
        return encode_phrase(text, CODEC_SAMPLE_RATE)
    except ValueError:
        words = text.split()
        if len(words) < 2:
            raise
        half = len(words) // 2
        gap = np.zeros(int(PHRASE_GAP_S * CODEC_SAMPLE_RATE), dtype=np.float32)
        return np.concatenate([_phrases(" ".join(words[:half])), gap, _phrases(" ".join(words[half:]))])


def split_audio(data: bytes, fmt: AudioFormat, chunk_ms: int) -> list[bytes]:
    """Cut audio into chunks of ``chunk_ms`` (the last may be shorter), on whole-sample boundaries."""
    step = max(1, fmt.sample_rate * chunk_ms // 1000) * fmt.bytes_per_sample
    return [data[i : i + step] for i in range(0, len(data), step)]


@dataclass(frozen=True, slots=True)
class CharTiming:
    char: str
    start: float
    end: float


def even_alignment(text: str, duration: float) -> list[CharTiming]:
    """Character timings spread evenly over the phrase (the fakes know no finer timing)."""
    if not text:
        return []
    step = duration / len(text)
    return [CharTiming(c, i * step, (i + 1) * step) for i, c in enumerate(text)]


def chars_in(alignment: list[CharTiming], start: float, end: float, *, last: bool) -> list[CharTiming]:
    """The characters that start within [start, end) (the last chunk takes every character left)."""
    return [c for c in alignment if c.start >= start and (last or c.start < end)]


_WAV_FORMAT_TAG = {"linear16": 1, "alaw": 6, "mulaw": 7}


def wav_header(fmt: AudioFormat, data_size: int) -> bytes:
    """A canonical 44-byte RIFF/WAVE header for mono audio of ``data_size`` bytes in ``fmt``."""
    bits = fmt.bytes_per_sample * 8
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_size)
        + b"WAVEfmt "
        + struct.pack(
            "<IHHIIHH",
            16,
            _WAV_FORMAT_TAG[fmt.encoding],
            1,
            fmt.sample_rate,
            fmt.bytes_per_second,
            fmt.bytes_per_sample,
            bits,
        )
        + b"data"
        + struct.pack("<I", data_size)
    )
