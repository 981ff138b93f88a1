"""Streaming conversion between audio formats (decode, resample with soxr state across chunks, encode).

One transcoder per direction and stream: caller audio telephony -> STT, and each TTS response -> telephony.
Chunks may split a 16-bit sample; the odd byte is carried to the next chunk.
"""

from __future__ import annotations

import numpy as np

from harness.audio.formats import AudioFormat, StreamResampler, from_bytes, to_bytes


class Transcoder:
    def __init__(self, src: AudioFormat, dst: AudioFormat) -> None:
        self.src = src
        self.dst = dst
        self._resampler = StreamResampler(src.sample_rate, dst.sample_rate)
        self._carry = b""

    @property
    def identity(self) -> bool:
        return self.src == self.dst

    def decode(self, data: bytes) -> np.ndarray:
        """``src`` bytes -> float samples at the source rate (keeps a split sample for the next call)."""
        data = self._carry + data
        usable = len(data) - len(data) % self.src.bytes_per_sample
        self._carry = data[usable:]
        return from_bytes(data[:usable], self.src)

    def process(self, data: bytes) -> bytes:
        if self.identity:
            return data
        return self.convert_samples(self.decode(data))

    def convert_samples(self, samples: np.ndarray, last: bool = False) -> bytes:
        """Float samples at the source rate -> ``dst`` bytes."""
        return to_bytes(self._resampler.process(samples, last=last), self.dst)

    def flush(self) -> bytes:
        if self.identity or self._resampler.from_rate == self._resampler.to_rate:
            self._carry = b""
            return b""
        self._carry = b""
        return to_bytes(self._resampler.process(np.zeros(0, dtype=np.float32), last=True), self.dst)
