"""WAV files in and out, for runtimes with a real STT: a caller can play phrases recorded to disk.

Only 16-bit PCM (what every speech tool writes) through the stdlib ``wave`` module; stereo is mixed down to mono
because a caller speaks one channel. Samples are float32 in [-1, 1], as everywhere in voicechaos.
"""

from __future__ import annotations

import wave
from os import PathLike

import numpy as np


def read_wav(path: str | PathLike[str]) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV file -> (float32 mono samples, sample rate). Other sample widths raise ValueError."""
    with wave.open(str(path), "rb") as f:
        width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
        if width != 2:
            raise ValueError(f"{path}: {8 * width}-bit samples; only 16-bit PCM WAV is supported")
        frames = f.readframes(f.getnframes())
    pcm = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return pcm, rate


def write_wav(path: str | PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """float samples in [-1, 1] -> a mono 16-bit PCM WAV file (values outside [-1, 1] are clipped)."""
    pcm = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
