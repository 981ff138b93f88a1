"""Audio between the harness's phrases and WebRTC tracks.

- :class:`PhraseTrack`, what a WebRTC caller sends: an aiortc audio track that plays queued phrase audio (silence
  between phrases) in 20 ms frames at real time, as a microphone does. aiortc's sender pulls ``recv()`` and encodes
  whatever codec was negotiated (Opus at 48 kHz, or PCMU/PCMA at 8 kHz); the track paces itself on an absolute 20 ms
  grid and records each frame's lateness, so an overloaded harness shows as its own lateness, never as the agent's;
- :class:`TrackListener`, what it hears: decoded frames (any rate, any layout) to mono float at the phrase codec's
  8 kHz, for the same :class:`~harness.hearing.Ear` as the Twilio caller. Frames lost on the way are concealed as
  silence of their length, found from the frames' RTP timestamps (``pts``): the timeline keeps its length, as a
  receiver's loss concealment keeps it, so a lost frame blurs the audio it covered instead of shifting everything
  after it. Concealed and late frames are counted.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from harness.audio.formats import StreamResampler
from harness.audio.phrase_codec import CODEC_SAMPLE_RATE
from harness.lateness import LatenessHistogram

FRAME_S = 0.020
TRACK_RATE = 48_000  # Opus's rate; aiortc resamples for G.711 itself
_FRAME_SAMPLES = int(TRACK_RATE * FRAME_S)


class PhraseTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._queue: deque[np.ndarray] = deque()
        self._pending = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._frames = 0
        self.lateness = LatenessHistogram()

    def say(self, samples: np.ndarray, sample_rate: int) -> None:
        """Queue phrase audio (float, -1..1, mono) to be played after what is queued already."""
        at_rate = StreamResampler(sample_rate, TRACK_RATE, quality="HQ").process(samples, last=True)
        self._queue.append(np.clip(at_rate * 32767.0, -32768, 32767).astype(np.int16))

    def clear(self) -> None:
        """Drop what is queued and not yet played (an agent stopping when the caller talks over it)."""
        self._queue.clear()
        self._pending = np.zeros(0, dtype=np.int16)

    @property
    def speaking(self) -> bool:
        return bool(self._queue) or len(self._pending) > 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = self._clock()
        due = self._start + self._frames * FRAME_S  # absolute grid: lateness never accumulates
        wait = due - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        self.lateness.record(self._clock() - due)
        samples = self._next_samples()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = TRACK_RATE
        frame.pts = self._frames * _FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, TRACK_RATE)
        self._frames += 1
        return frame

    def _next_samples(self) -> np.ndarray:
        while len(self._pending) < _FRAME_SAMPLES and self._queue:
            self._pending = np.concatenate([self._pending, self._queue.popleft()])
        out = self._pending[:_FRAME_SAMPLES]
        self._pending = self._pending[_FRAME_SAMPLES:]
        if len(out) < _FRAME_SAMPLES:
            out = np.concatenate([out, np.zeros(_FRAME_SAMPLES - len(out), dtype=np.int16)])
        return out


def mono_samples(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame (any layout; s16, s32 or float samples, packed or planar) as mono float samples, -1..1."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = data.astype(np.float32).mean(axis=0)
    else:
        mono = data.reshape(-1, channels).astype(np.float32).mean(axis=1)
    name = frame.format.name
    if name.startswith("s16"):
        mono /= 32768.0
    elif name.startswith("s32"):
        mono /= 2147483648.0
    return mono


#: a hole longer than this is not concealed (the stream restarted, or its clock jumped): it is a break
MAX_CONCEAL_S = 1.0


class TrackListener:
    """Decoded frames of a received audio track, as mono float samples at 8 kHz."""

    def __init__(self) -> None:
        self._resampler: StreamResampler | None = None
        self._rate = 0
        self._next_pts: int | None = None
        self.frames = 0
        self.concealed_samples = 0  # at the track's rate
        self.late_frames = 0

    @property
    def concealed_ms(self) -> float:
        return 1000.0 * self.concealed_samples / self._rate if self._rate else 0.0

    def samples(self, frame: av.AudioFrame) -> np.ndarray:
        """The frame's audio at 8 kHz, preceded by silence for any frames lost before it; nothing for a frame that
        arrives after its place was concealed."""
        hole = 0
        if frame.pts is not None:
            if self._next_pts is not None:
                if frame.pts < self._next_pts:
                    self.late_frames += 1
                    return np.zeros(0, dtype=np.float32)
                hole = frame.pts - self._next_pts
                if hole > MAX_CONCEAL_S * frame.sample_rate:
                    hole = 0
            self._next_pts = frame.pts + frame.samples
        mono = mono_samples(frame)
        if frame.sample_rate != self._rate:
            self._rate = frame.sample_rate
            self._resampler = StreamResampler(frame.sample_rate, CODEC_SAMPLE_RATE)
        self.frames += 1
        if hole:
            self.concealed_samples += hole
            mono = np.concatenate([np.zeros(hole, dtype=np.float32), mono])
        assert self._resampler is not None
        return self._resampler.process(mono)
