"""Energy-based voice activity detection on the caller's audio, sans-I/O.

Used for barge-in, not for end of turn (Deepgram's endpointing decides that). Frames of ``frame_ms`` are
scored by their RMS level in dBFS. Speech *starts* once ``min_speech_ms`` of consecutive loud frames have been
seen (a click or a cough edge does not count) and *stops* once ``hangover_ms`` of quiet frames follow (the
gaps between syllables do not end speech). Times in events are audio time, in seconds since the first sample
fed, so the detector is exact and testable without a clock.

An energy VAD hears any loud noise as speech; a neural VAD (Silero) would not. That is a known trade-off: the
reference runtime stays dependency-light, and the simulated callers speak voice-like phrase audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    at_s: float
    """audio time where the first loud frame of this speech began"""


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    at_s: float
    """audio time where the last loud frame ended (before the hangover)"""


VadEvent = SpeechStarted | SpeechStopped


def dbfs(samples: np.ndarray) -> float:
    """RMS level of float samples in [-1, 1], in dB relative to a full-scale square wave; silence is -inf."""
    if samples.size == 0:
        return float("-inf")
    x = samples.astype(np.float64, copy=False)
    rms = float(np.sqrt(np.dot(x, x) / x.size))  # one BLAS call: this runs for every 20 ms caller frame
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


class EnergyVad:
    def __init__(
        self,
        sample_rate: int,
        *,
        threshold_dbfs: float = -38.0,
        min_speech_ms: int = 80,
        hangover_ms: int = 300,
        frame_ms: int = 20,
    ) -> None:
        self.sample_rate = sample_rate
        self.threshold_dbfs = threshold_dbfs
        self.frame_len = max(1, sample_rate * frame_ms // 1000)
        self._frame_s = self.frame_len / sample_rate
        self._min_speech_frames = max(1, -(-min_speech_ms // frame_ms))
        self._hangover_frames = max(1, -(-hangover_ms // frame_ms))
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames_seen = 0
        self.speaking = False
        self._loud_run = 0
        self._quiet_run = 0

    def process(self, samples: np.ndarray) -> list[VadEvent]:
        """Feed any number of samples; returns the events completed by them, in order."""
        samples = np.asarray(samples, dtype=np.float32)
        buffered = np.concatenate([self._pending, samples]) if self._pending.size else samples
        events: list[VadEvent] = []
        whole = len(buffered) - len(buffered) % self.frame_len
        for start in range(0, whole, self.frame_len):
            event = self._frame(dbfs(buffered[start : start + self.frame_len]) >= self.threshold_dbfs)
            if event is not None:
                events.append(event)
        self._pending = buffered[whole:]
        return events

    def _frame(self, loud: bool) -> VadEvent | None:
        self._frames_seen += 1
        end_s = self._frames_seen * self._frame_s
        if not self.speaking:
            self._loud_run = self._loud_run + 1 if loud else 0
            if self._loud_run >= self._min_speech_frames:
                self.speaking = True
                self._quiet_run = 0
                return SpeechStarted(at_s=end_s - self._loud_run * self._frame_s)
            return None
        self._quiet_run = 0 if loud else self._quiet_run + 1
        if self._quiet_run >= self._hangover_frames:
            self.speaking = False
            self._loud_run = 0
            return SpeechStopped(at_s=end_s - self._quiet_run * self._frame_s)
        return None
