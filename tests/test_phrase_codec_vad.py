"""Phrase audio must look like a voice to a neural VAD, or runtimes running Silero never hear the caller speak.

Silero (the default VAD of Pipecat and LiveKit agents) gives a pure tone a speech probability near 0; see
shared/protocols/twilio-media-streams.md, section 5. The ``silero-vad`` package ships its ONNX weights and runs
offline. The tone test proves the check can tell a voice from a non-voice.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from silero_vad import get_speech_timestamps, load_silero_vad

from harness.audio import formats
from harness.audio.formats import TWILIO_MULAW_8K
from harness.audio.phrase_codec import encode_phrase

PHRASES = [
    "Hello, I'd like to book a table for two tonight.",
    "Yes.",
    "What time do you close on Sundays?",
    "My account number is 4417-2290, thanks!",
    "ok",
    "Could you repeat that, please?",
]
# silero_vad's loader uses a deprecated importlib.resources call; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:path is deprecated:DeprecationWarning")

GAP = 0.6  # seconds of silence before, between and after the phrases
VAD_HANGOVER = 0.2  # Silero's probability takes a moment to fall after speech stops


@pytest.fixture(scope="module")
def vad():
    return load_silero_vad(onnx=True)


def conversation() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Phrases separated by silence at 8 kHz, and where each phrase is (seconds)."""
    gap = np.zeros(round(GAP * 8000), dtype=np.float32)
    parts, spans, t = [gap], [], GAP
    for text in PHRASES:
        audio = encode_phrase(text)
        parts += [audio, gap]
        spans.append((t, t + len(audio) / 8000))
        t += len(audio) / 8000 + GAP
    return np.concatenate(parts), spans


def speech_probabilities(vad, samples: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Silero's probability per window (32 ms at 8 and 16 kHz) and each window's centre time."""
    probs = vad.audio_forward(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), rate)
    probs = probs.numpy().ravel()
    window = 512 if rate == 16000 else 256
    return probs, (np.arange(len(probs)) + 0.5) * window / rate


def assert_voice(vad, samples: np.ndarray, rate: int, spans: list[tuple[float, float]], floor: float) -> None:
    probs, t = speech_probabilities(vad, samples, rate)
    inside = np.zeros(len(t), dtype=bool)
    for start, end in spans:
        in_phrase = (t >= start) & (t < end)
        inside |= in_phrase
        assert probs[in_phrase].mean() > floor, (start, probs[in_phrase].round(2))
    assert probs[inside].mean() > 0.8
    assert (probs[inside] > 0.5).mean() > 0.8  # speech over most of each phrase's duration, not in bursts
    # the pauses between phrases are silence (after the VAD's short hangover)
    quiet = ~inside
    for _, end in spans:
        quiet &= ~((t >= end) & (t < end + VAD_HANGOVER))
    assert probs[quiet].mean() < 0.1 and probs[quiet].max() < 0.5

    segments = get_speech_timestamps(torch.from_numpy(samples), vad, sampling_rate=rate, return_seconds=True)
    assert len(segments) == len(spans), segments  # one speech segment per phrase: the pauses split them
    for (start, end), segment in zip(spans, segments, strict=True):
        covered = min(end, segment["end"]) - max(start, segment["start"])
        assert covered > 0.8 * (end - start), (start, end, segment)


def test_phrases_are_speech_at_16k(vad) -> None:
    audio, spans = conversation()
    assert_voice(vad, formats.resample(audio, 8000, 16000), 16000, spans, floor=0.8)


@pytest.mark.parametrize("mulaw", [True, False], ids=["mulaw", "float"])
def test_phrases_are_speech_at_8k(vad, mulaw: bool) -> None:
    audio, spans = conversation()
    if mulaw:  # what a runtime behind Twilio hears
        audio = formats.from_bytes(formats.to_bytes(audio, TWILIO_MULAW_8K), TWILIO_MULAW_8K)
    # the short phrases ("ok", 0.5 s) score lower at 8 kHz: Silero needs ~150 ms to warm up
    assert_voice(vad, audio, 8000, spans, floor=0.6)


@pytest.mark.parametrize("hz", [180.0, 440.0])
def test_a_pure_tone_is_not_speech(vad, hz: float) -> None:
    tone = (0.5 * np.sin(2 * np.pi * hz * np.arange(3 * 16000) / 16000)).astype(np.float32)
    probs, _ = speech_probabilities(vad, tone, 16000)
    assert probs.mean() < 0.1
    assert get_speech_timestamps(torch.from_numpy(tone), vad, sampling_rate=16000) == []
