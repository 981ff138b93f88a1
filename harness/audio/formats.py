"""Audio formats as the wire names them, and conversions between them.

Samples inside voicechaos are float32 numpy arrays in [-1, 1]. On the wire they are bytes in a declared
:class:`AudioFormat`. Converting goes through two pure functions, :func:`to_bytes` and :func:`from_bytes`, plus
:func:`resample` (soxr, a real band-limited resampler: a naive one would alias and smear the phrase codec's harmonics).

A mismatch is not an error here: bytes read under the wrong format decode to the wrong samples, exactly as they would
in production. The phrase codec is what notices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import soxr

from harness.audio import g711

Encoding = Literal["mulaw", "alaw", "linear16"]


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: Encoding
    sample_rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "linear16" else 1

    @property
    def bytes_per_second(self) -> int:
        return self.bytes_per_sample * self.sample_rate

    def duration(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_second

    def __str__(self) -> str:
        return f"{self.encoding}@{self.sample_rate}"


#: Twilio PSTN Media Streams: raw μ-law, 8 kHz, mono (Twilio "Media Streams - WebSocket Messages").
TWILIO_MULAW_8K = AudioFormat("mulaw", 8000)
#: The WebRTC-style default many platforms hard-code.
PCM_16K = AudioFormat("linear16", 16000)


def to_bytes(samples: np.ndarray, fmt: AudioFormat) -> bytes:
    """float samples in [-1, 1] -> bytes in ``fmt`` (no resampling: samples must already be at fmt.sample_rate)."""
    pcm = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    if fmt.encoding == "linear16":
        return pcm.astype("<i2").tobytes()
    if fmt.encoding == "mulaw":
        return g711.mulaw_encode(pcm)
    if fmt.encoding == "alaw":
        return g711.alaw_encode(pcm)
    raise ValueError(f"unknown encoding {fmt.encoding!r}")


def from_bytes(data: bytes, fmt: AudioFormat) -> np.ndarray:
    """bytes in ``fmt`` -> float32 samples. A trailing odd byte of linear16 is ignored."""
    if fmt.encoding == "linear16":
        usable = len(data) - (len(data) % 2)
        pcm = np.frombuffer(data[:usable], dtype="<i2")
    elif fmt.encoding == "mulaw":
        pcm = g711.mulaw_decode(data)
    elif fmt.encoding == "alaw":
        pcm = g711.alaw_decode(data)
    else:
        raise ValueError(f"unknown encoding {fmt.encoding!r}")
    return pcm.astype(np.float32) / 32768.0


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling of a whole buffer (soxr, high quality)."""
    if from_rate == to_rate:
        return np.asarray(samples, dtype=np.float32)
    return soxr.resample(np.asarray(samples, dtype=np.float32), from_rate, to_rate, quality="HQ").astype(np.float32)


def convert(data: bytes, src: AudioFormat, dst: AudioFormat) -> bytes:
    """Re-encode a whole buffer from one format to another (decode, resample, encode)."""
    if src == dst:
        return data
    return to_bytes(resample(from_bytes(data, src), src.sample_rate, dst.sample_rate), dst)


class StreamResampler:
    """Streaming resampler for audio that arrives in chunks (one per call and direction).

    soxr keeps filter state between chunks, so 20 ms frames resample without clicks at their edges. The quality is
    "LQ" on purpose: this is a real-time path, and soxr's streaming "HQ" holds back about 96 ms of output (measured:
    1540 samples at 8 -> 16 kHz in 20 ms chunks) where "LQ" holds back about 24 ms. Two HQ stages (runtime to STT, STT
    to its decoder) would add some 190 ms to every reply, latency no caller should be charged for. LQ's passband still
    covers everything below 3.6 kHz that telephone speech (and the phrase codec) uses.
    """

    def __init__(self, from_rate: int, to_rate: int, quality: str = "LQ") -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._stream = None if from_rate == to_rate else soxr.ResampleStream(
            from_rate, to_rate, 1, dtype="float32", quality=quality)

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)


# --- provider format names -------------------------------------------------------------------------------------------

_ELEVENLABS_ENCODINGS: dict[str, Encoding] = {"ulaw": "mulaw", "alaw": "alaw", "pcm": "linear16"}


def parse_elevenlabs_output_format(name: str) -> AudioFormat:
    """ElevenLabs ``output_format`` (``ulaw_8000``, ``pcm_16000``...) -> AudioFormat. mp3/opus are not supported."""
    prefix, _, rate = name.partition("_")
    if prefix not in _ELEVENLABS_ENCODINGS or not rate.isdigit():
        raise ValueError(f"unsupported output_format {name!r}: expected ulaw_8000, alaw_8000 or pcm_<rate>")
    return AudioFormat(_ELEVENLABS_ENCODINGS[prefix], int(rate))


def elevenlabs_output_format(fmt: AudioFormat) -> str:
    prefix = {v: k for k, v in _ELEVENLABS_ENCODINGS.items()}[fmt.encoding]
    return f"{prefix}_{fmt.sample_rate}"


def parse_deepgram_encoding(encoding: str, sample_rate: int) -> AudioFormat:
    """Deepgram ``encoding`` query value (``linear16``, ``mulaw``, ``alaw``) plus ``sample_rate`` -> AudioFormat."""
    if encoding not in ("linear16", "mulaw", "alaw"):
        raise ValueError(f"unsupported encoding {encoding!r}: expected linear16, mulaw or alaw")
    return AudioFormat(encoding, sample_rate)  # type: ignore[arg-type]
