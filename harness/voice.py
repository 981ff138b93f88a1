"""The caller's voice: utterances turned into ready-to-send 20 ms Media Streams frames (base64 μ-law).

Every call in a run says the same few phrases, so each is encoded once per process and shared.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from harness.audio import formats, g711
from harness.audio.phrase_codec import decode_phrases, encode_phrase
from harness.audio.wav import read_wav
from harness.scenario import Say, Step

FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz: what Twilio sends per media message
SILENCE_FRAME_B64 = base64.b64encode(bytes([g711.MULAW_SILENCE]) * FRAME_BYTES).decode("ascii")


def frames_of(mulaw: bytes) -> tuple[str, ...]:
    """Split μ-law audio into base64 frames of 20 ms; the last one is padded with silence."""
    remainder = len(mulaw) % FRAME_BYTES
    if remainder:
        mulaw += bytes([g711.MULAW_SILENCE]) * (FRAME_BYTES - remainder)
    return tuple(
        base64.b64encode(mulaw[i : i + FRAME_BYTES]).decode("ascii") for i in range(0, len(mulaw), FRAME_BYTES)
    )


class Voice:
    """Phrase and WAV utterances as frames, cached (bounded) for the life of a run."""

    def __init__(self, cache_size: int = 256) -> None:
        self.phrase_frames = lru_cache(maxsize=cache_size)(self._phrase_frames)
        self.wav_frames = lru_cache(maxsize=cache_size)(self._wav_frames)

    def prepare(self, script: Sequence[Step]) -> int:
        """Encode every utterance of ``script`` now, so no call pays for it inside its 20 ms pacing."""
        count = 0
        for step in script:
            if isinstance(step, Say):
                if step.text is not None:
                    self.phrase_frames(step.text)
                else:
                    self.wav_frames(step.wav or "")
                count += 1
        # the phrase decoder builds its templates on first use: pay that here too
        decode_phrases(formats.from_bytes(self.phrase_frames_bytes("warm up."), formats.TWILIO_MULAW_8K), 8000)
        return count

    def phrase_frames_bytes(self, text: str) -> bytes:
        return b"".join(base64.b64decode(frame) for frame in self.phrase_frames(text))

    @staticmethod
    def _phrase_frames(text: str) -> tuple[str, ...]:
        samples = encode_phrase(text, formats.TWILIO_MULAW_8K.sample_rate)
        return frames_of(formats.to_bytes(samples, formats.TWILIO_MULAW_8K))

    @staticmethod
    def _wav_frames(path: str) -> tuple[str, ...]:
        samples, rate = read_wav(path)
        samples = formats.resample(samples, rate, 8000)
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        if peak > 1.0:
            samples = samples / peak
        return frames_of(formats.to_bytes(samples, formats.TWILIO_MULAW_8K))
